"""The ``hydra`` command: run, signpost, generate, chat, keygen, id, status, account."""

import argparse
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

import hydra
from hydra.api.config import APIConfig
from hydra.compaction.plan import MODES, CompactionPlan, load_budgets
from hydra.config import (
    CHAT_SAMPLING,
    GENERATE_SAMPLING,
    NODE,
    SIGNPOST,
    GenerateConfig,
    NodeConfig,
    SignpostConfig,
)
from hydra.coordinator.params import SamplingParams
from hydra.dht.config import DiscoveryConfig
from hydra.economy.config import TokenConfig
from hydra.errors import ConfigError, HydraError
from hydra.p2p.home import KEY_FILE, default_home
from hydra.privacy.config import PrivacyConfig
from hydra.stage.limits import StageLimits
from hydra.verification.config import VerificationConfig
from protocols.inference import SELECTIONS

log = logging.getLogger("hydra")


def _home(args: argparse.Namespace) -> Path:
    return Path(args.home).expanduser() if args.home else default_home()


def parse_layers(text: str) -> tuple[int, int]:
    """``"START:END"`` (END exclusive) into a pair; ``ConfigError`` with a usable message."""
    start, sep, end = text.partition(":")
    if not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise ConfigError(f"--layers expects START:END, e.g. 0:10, got {text!r}")
    first, last = int(start), int(end)
    if first >= last:
        raise ConfigError(f"--layers {text}: START must be below END")
    return first, last


def _discovery(args: argparse.Namespace) -> DiscoveryConfig:
    interval = args.announce_interval
    return DiscoveryConfig(
        bootstrap=tuple(args.bootstrap) if args.bootstrap else NODE.discovery.bootstrap,
        announce_interval=interval,
        record_ttl=args.record_ttl if args.record_ttl else 3 * interval,
        work_bits=args.work_bits,
        region=args.region,
    )


def _print_ready(title: str, status: dict[str, Any]) -> None:
    lines = [title, f"  peer id   {status['peer_id']}"]
    lines += [f"  p2p       {addr}" for addr in status["addrs"]]
    for key in ("api", "http_dht"):
        if key in status:
            lines.append(f"  {key:<9} {status[key]}")
    if status.get("role") == "node":
        lines.append(f"  console   {status['api']}/  (open it in a browser)")
    if "hardware" in status:
        lines.append(f"  hardware  {status['hardware']}")
    if "model" in status:
        start, end = status["layers"]
        lines.append(f"  serving   {status['model']} layers {start}:{end} of {status['total_layers']}")
    signposts = status["signposts"]
    if signposts["configured"]:
        lines.append(
            f"  swarm     joined via {signposts['answered']}/{signposts['configured']} signposts, "
            f"{status['routing_table']} peers known"
            + ("" if signposts["answered"] else " (standalone until a signpost answers)")
        )
    else:
        lines.append("  swarm     standalone (no --bootstrap given)")
    print("\n".join(lines), flush=True)


class ReadyLine:
    """Prints the ready summary once a node or signpost serves, and remembers that it did."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.done = False

    def __call__(self, status: dict[str, Any]) -> None:
        _print_ready(self.title, status)
        self.done = True

    def printed(self) -> bool:
        return self.done


SHUTDOWN_GRACE_S = 6.0  # after the first signal; the test harness allows 10


async def _until_signal(
    main: Callable[[trio.Event], Awaitable[None]], serving: Callable[[], bool]
) -> None:
    """Run ``main(stopping)`` until it returns. The first SIGINT/SIGTERM sets ``stopping``, on
    which ``main`` finishes what is in flight (live streams get their terminator) and returns;
    a second signal, or ``main`` still running ``SHUTDOWN_GRACE_S`` later, cancels it. Before
    ``serving()`` there is nothing in flight: a signal cancels at once."""
    stopping = trio.Event()
    # what the receiver below restores when it closes, and hands the signals still queued then:
    # shutdown is under way by then, and a signal redelivered to Python's default handlers
    # would end the process with a KeyboardInterrupt traceback (or SIGTERM's -15) instead of 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("%s received: shutting down", signal.Signals(signum).name)
                    if stopping.is_set() or not serving():
                        nursery.cancel_scope.cancel()
                        return
                    stopping.set()
                    nursery.start_soon(give_up)

        async def give_up() -> None:
            await trio.sleep(SHUTDOWN_GRACE_S)
            nursery.cancel_scope.cancel()

        async def run_main() -> None:
            await main(stopping)
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        nursery.start_soon(run_main)


def _starting(what: str, args: argparse.Namespace) -> None:
    """The first output, before the imports that take seconds (libp2p, torch)."""
    print(f"hydra: starting {what}", file=sys.stderr, flush=True)
    configure_libp2p_logging(args.log_level)


def stage_summary(stage: dict) -> list[tuple[str, str]]:
    """``hydra status`` lines for what a node's stage does with concurrent sessions."""
    rows = []
    batching = stage.get("batching")
    if batching:
        rows.append(("batching", f"{batching['batches']} batches, {batching['mean_rows']} rows on average, "
                                 f"{batching['largest']} at most (cap {batching['max_batch']})"))
    if stage.get("compactions"):
        rows.append(("kv compaction", f"{stage['compactions']} compactions of sessions' caches"))
    prefixes = stage.get("prefix_cache")
    if prefixes:
        rows.append(("prefix cache", f"{prefixes['blocks']} blocks ({prefixes['bytes'] / 2**20:.1f} MB), "
                                     f"{prefixes['reused']} reused"))
    return rows


def promotion_summary(promotion: dict) -> list[tuple[str, str]]:
    """``hydra status`` line for the node's moves to larger models (``hydra.promotion``)."""
    if promotion.get("moves"):
        last = promotion["moves"][-1]
        return [("promotion", f"moved from {last['from']} to {last['to']}, which the swarm lacked")]
    if promotion.get("could"):
        return [("promotion", f"could move to {promotion['could']}, which the swarm lacks (--no-promote)")]
    return []


def stage_limits_from(args: argparse.Namespace) -> StageLimits:
    return StageLimits(
        max_sessions=args.max_sessions,
        cache_bytes=int(args.cache_gb * 2**30),
        max_batch=args.max_batch,
        batch_window=None if args.batch_window_ms is None else args.batch_window_ms / 1000,
    )


def cmd_run(args: argparse.Namespace) -> int:
    _starting("a node: loading libp2p, torch and the model (a few seconds)", args)
    from hydra.models.catalog import load_catalog
    from hydra.node import run_node
    from hydra.stage.placement import shard_layers

    layers = parse_layers(args.layers) if args.layers else None
    if args.total_shards is not None or args.shard_index is not None:
        if args.total_shards is None or args.shard_index is None or layers:
            raise ConfigError("--shard-index and --total-shards go together, without --layers")
        catalog = load_catalog()
        spec = catalog.resolve(args.model or catalog.default)
        layers = shard_layers(args.shard_index, args.total_shards, spec.num_layers)
    config = NodeConfig(
        home=_home(args),
        host=args.host,
        port=args.port,
        api_host=args.api_host,
        api_port=args.api_port,
        model=args.model,
        layers=layers,
        model_path=args.model_path,
        promote=not args.no_promote,
        runtime_backend=args.runtime_backend,
        dtype=args.dtype,
        quantization=args.quantization,
        compile=args.compile,
        draft_tokens=args.draft_tokens,
        wire_dtype=args.wire_dtype,
        compaction=_compaction(args),
        device=args.device,
        stage_limits=stage_limits_from(args),
        api=APIConfig(
            rate_limit=args.rate_limit,
            rate_window=args.rate_window,
            default_max_tokens=args.default_max_tokens,
        ),
        privacy=_privacy(args),
        verification=VerificationConfig(
            verify_rate=args.verify_rate,
            probes_only=args.verify_probes_only,
            redundancy=args.redundancy,
            min_reputation=args.min_reputation,
        ),
        discovery=_discovery(args),
        token=TokenConfig(
            federation=tuple(args.federation or ()),
            channel_deposit=_micro(args.channel_deposit, "--channel-deposit"),
            mint_every_s=args.mint_every,
        ),
    )
    ready = ReadyLine("OpenHydra node ready")
    trio.run(_until_signal, lambda stopping: run_node(config, ready, stopping), ready.printed)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    _starting("a one-shot coordinator: loading libp2p, torch and the model", args)
    from hydra.generate import run_generate

    sampling = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop),
    )
    config = GenerateConfig(
        prompt=args.prompt,
        model=args.model,
        chat=args.chat,
        sampling=sampling,
        discovery=_discovery(args),
        wait=args.wait,
        dtype=args.dtype,
        quantization=args.quantization,
        compile=args.compile,
        draft_tokens=args.draft_tokens,
        wire_dtype=args.wire_dtype,
        compaction=_compaction(args),
        device=args.device,
        privacy=_privacy(args),
        model_path=args.model_path,
    )
    completion = trio.run(run_generate, config)
    print(
        f"[{completion.completion_tokens} tokens, {completion.finish_reason}, "
        f"first token {completion.ttft_s * 1e3:.0f} ms, {completion.decode_tokens_per_s:.1f} tokens/s, "
        f"route {len(completion.route)} hop(s), {completion.failovers} failover(s)]",
        file=sys.stderr,
    )
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from hydra.chat import run_chat

    params = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if args.seed is not None:
        params["seed"] = args.seed
    return run_chat(with_scheme(args.api), args.model, args.system, params)


def cmd_signpost(args: argparse.Namespace) -> int:
    _starting("a signpost: loading libp2p", args)
    from bootstrap.signpost import run_signpost

    config = SignpostConfig(
        home=_home(args),
        host=args.host,
        port=args.port,
        http_host=args.http_host,
        http_port=args.http_port,
        relay=args.relay,
        discovery=_discovery(args),
        token=TokenConfig(federation=tuple(args.federation or ()), ledger=args.ledger, k=args.federation_k),
    )
    ready = ReadyLine("OpenHydra signpost ready")
    trio.run(_until_signal, lambda stopping: run_signpost(config, ready, stopping), ready.printed)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from hydra.p2p.identity import load_or_create, peer_id

    path = _home(args) / KEY_FILE
    if path.exists() and args.force:
        path.unlink()
    existed = path.exists()
    print(peer_id(load_or_create(path)).to_base58())
    print(f"{'existing' if existed else 'new'} identity at {path}", file=sys.stderr)
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    from hydra.p2p.identity import IdentityError, load, peer_id

    path = _home(args) / KEY_FILE
    if not path.exists():
        raise IdentityError(f"no identity at {path}; `hydra keygen` or `hydra run` creates one")
    print(peer_id(load(path)).to_base58())
    return 0


def with_scheme(url: str) -> str:
    """``127.0.0.1:8080`` as ``http://127.0.0.1:8080`` (people leave the scheme out)."""
    url = url.rstrip("/")
    return url if "://" in url else f"http://{url}"


def cmd_status(args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.table import Table

    api = with_scheme(args.api)
    try:
        status = httpx.get(f"{api}/v1/network/status", timeout=5).json()
        peers = httpx.get(f"{api}/peers", timeout=10).json()["peers"]
    except httpx.HTTPError as exc:
        print(f"no node answers at {args.api}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        import json

        print(json.dumps({"status": status, "peers": peers}, indent=2))
        return 0
    console = Console()
    summary = Table(show_header=False, box=None)
    keys = ("role", "peer_id", "version", "uptime_s", "hardware", "model", "layers", "routing_table",
            "connections", "records_held")
    rows = [(key, str(status[key])) for key in keys if key in status]
    rows += stage_summary(status.get("stage") or {}) + promotion_summary(status.get("promotion") or {})
    for key, value in rows:
        summary.add_row(key, value)
    console.print(summary)
    table = Table(title=f"{len(peers)} announcing peers")
    for column in ("peer", "model", "layers", "dtype", "addrs", "expires in"):
        table.add_column(column)
    import time

    for p in peers:
        start, end = p["layers"]
        table.add_row(p["peer_id"][-12:], p["model"], f"{start}:{end}/{p['total_layers']}",
                      p["dtype"], ", ".join(p["addrs"]), f"{p['expires_at'] - time.time():.0f}s")
    console.print(table)
    reputation = status.get("reputation", [])
    if reputation:
        scores = Table(title="reputation (this node's view)")
        for column in ("peer", "score", "verification", "uptime", "latency", "stake", "checks ok", "failed",
                       "routed"):
            scores.add_column(column)
        for r in reputation:
            scores.add_row(r["peer_id"][-12:], f"{r['total']:.2f}", f"{r['verification']:.2f}",
                           f"{r['uptime']:.2f}", f"{r['latency']:.2f}", f"{r['stake']:.2f}",
                           f"{r['checks_passed']:.0f}", f"{r['checks_failed']:.0f}",
                           "yes" if r["admissible"] else "excluded")
        console.print(scores)
    return 0


def cmd_account(args: argparse.Namespace) -> int:
    from hydra.account import run_account

    return run_account(with_scheme(args.api), args.action, args.values, args.json)


def _micro(hydra: float, flag: str) -> int:
    """An amount of HYDRA from the command line as integer micro-HYDRA."""
    if not 0 <= hydra <= 69e6:
        raise ConfigError(f"{flag} must be between 0 and 69,000,000 HYDRA")
    return round(hydra * 1_000_000)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="state directory (default $HYDRA_HOME or ~/.openhydra)")
    p.add_argument("--log-level", default=os.environ.get("HYDRA_LOG_LEVEL", "INFO"))


def _add_discovery(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                   help="signpost /ip4/HOST/tcp/PORT/p2p/PEER_ID (repeatable)")
    p.add_argument("--announce-interval", type=float, default=NODE.discovery.announce_interval,
                   metavar="SECONDS")
    p.add_argument("--record-ttl", type=float, metavar="SECONDS",
                   help="lifetime of announced records (default 3 x announce interval)")
    p.add_argument("--work-bits", type=int, default=NODE.discovery.work_bits,
                   help="proof of work records must carry; the whole swarm must agree "
                        "(default %(default)s)")
    p.add_argument("--region", default=NODE.discovery.region,
                   help="region claimed in this node's records")


def _add_privacy(p: argparse.ArgumentParser) -> None:
    p.add_argument("--local-layers", type=int, default=NODE.privacy.local_layers, metavar="K",
                   help="run the first K blocks on this machine, so no peer sees embeddings")
    p.add_argument("--dp-noise-sigma", type=float, default=NODE.privacy.dp_noise_sigma,
                   metavar="SIGMA",
                   help="Gaussian noise on activations leaving this node (costs quality)")
    p.add_argument("--relayed-return", action="store_true",
                   help="have the last stage's output come back through every stage, so that only the "
                        "first stage learns this node's identity (2N messages per token instead of N+1)")
    p.add_argument("--no-encryption", action="store_true",
                   help="turn off onion routing and sealed activations (for comparisons only)")


def _add_verification(p: argparse.ArgumentParser) -> None:
    checks = NODE.verification
    p.add_argument("--verify-rate", type=float, default=checks.verify_rate, metavar="P",
                   help="share of each stage's steps re-checked after the fact (default %(default)s)")
    p.add_argument("--verify-probes-only", action="store_true",
                   help="never have your own prompts recomputed by a second peer: after each of your "
                        "generations, audit a synthetic one on the same route instead")
    p.add_argument("--redundancy", type=int, default=checks.redundancy, metavar="N",
                   help="run every step on N routes of disjoint peers and take the majority (default "
                        "%(default)s)")
    p.add_argument("--min-reputation", type=float, default=checks.min_reputation, metavar="SCORE",
                   help="leave peers scoring below this out of routes (default %(default)s)")


def _privacy(args: argparse.Namespace) -> PrivacyConfig:
    return PrivacyConfig(
        protect=not args.no_encryption,
        local_layers=args.local_layers,
        dp_noise_sigma=args.dp_noise_sigma,
        relayed_return=args.relayed_return,
    )


def _compaction(args: argparse.Namespace) -> CompactionPlan:
    budgets = args.kv_compaction_budgets
    return CompactionPlan(
        mode=args.kv_compaction_mode,
        ratio=args.kv_compaction_ratio,
        phase=args.kv_compaction_phase,
        selection=args.kv_compaction_selection,
        shares=load_budgets(budgets) if budgets else {},
    )


def _add_compaction(p: argparse.ArgumentParser) -> None:
    plan = NODE.compaction
    p.add_argument("--kv-compaction-mode", choices=MODES, default=plan.mode,
                   help="compact the KV caches of your sessions' stages by Attention Matching: on (the "
                   "prompt once prefilled, then whenever the cache is full), auto (only when a stage has "
                   "no room for the whole session), off (default %(default)s)")
    p.add_argument("--kv-compaction-ratio", type=float, default=plan.ratio, metavar="R",
                   help="cached entries before a compaction / after it (default %(default)s)")
    p.add_argument("--kv-compaction-phase", type=int, choices=[1, 2, 3, 4], default=plan.phase,
                   help="1: keep the most attended keys; 2: and fit their biases and values; 3: and "
                   "per-block budgets (--kv-compaction-budgets); 4: and compact as often as a session "
                   "needs (1-3: once) (default %(default)s)")
    p.add_argument("--kv-compaction-budgets", type=Path, metavar="FILE",
                   help='phase 3: JSON {"<block>": share or [share per KV head]}, relative shares of '
                   "each compaction's target")
    p.add_argument("--kv-compaction-selection", choices=SELECTIONS, default=plan.selection,
                   help="choose kept keys by attention, or by orthogonal matching pursuit (slower) "
                   "(default %(default)s)")


def _add_compute(p: argparse.ArgumentParser, compile_default: str) -> None:
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=NODE.dtype)
    p.add_argument("--quantization", choices=["auto", "none", "int8", "int4", "nf4"],
                   default=NODE.quantization,
                   help="weight-only quantization of the linear layers (int4: CPU; nf4: for CUDA); auto: the "
                   "catalog's recommendation on a CPU, none elsewhere; none is exact (default %(default)s)")
    p.add_argument("--compile", choices=["auto", "on", "off"], default=compile_default,
                   help="compile one-token decode steps with torch.compile (auto: on a CPU with a C++ "
                   "compiler; 20-45 s once at start) (default %(default)s)")
    p.add_argument("--device", default=NODE.device,
                   help="auto (cuda if available), cpu, cuda, cuda:1")
    p.add_argument("--wire-dtype", choices=["auto", "float32", "float16", "bfloat16"],
                   default=NODE.wire_dtype,
                   help="activations between stages: half the bytes in 16 bits; auto: the catalog's choice "
                   "per model, where greedy tokens were measured unchanged (default %(default)s)")
    p.add_argument("--draft-tokens", type=int, default=NODE.draft_tokens, metavar="K",
                   help="speculative decoding of greedy requests: up to K tokens drafted (prompt lookup, or "
                   "the catalog's draft model) and checked in one step, same output (0: off; default "
                   "%(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hydra", description="OpenHydra peer-to-peer LLM node")
    parser.add_argument("--version", action="version", version=f"openhydra {hydra.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a node: serve layers to peers, answer the API")
    _add_common(run)
    _add_discovery(run)
    run.add_argument("--host", default=NODE.host, help="libp2p listen address")
    run.add_argument("--port", type=int, default=NODE.port, help="libp2p TCP port")
    run.add_argument("--api-host", default=NODE.api_host)
    run.add_argument("--api-port", type=int, default=NODE.api_port)
    run.add_argument("--model", help="catalog id or alias (default: the catalog's default)")
    run.add_argument("--layers", metavar="START:END", help="serve layers [START, END)")
    run.add_argument("--shard-index", type=int, metavar="I")
    run.add_argument("--total-shards", type=int, metavar="N")
    run.add_argument("--model-path", type=Path, metavar="DIR",
                     help="local checkpoint (config.json + safetensors) instead of the catalog source")
    run.add_argument("--runtime-backend", choices=["auto", "pytorch", "mlx"], default=NODE.runtime_backend,
                     help="the library running this node's blocks: mlx (through mlx-lm) suits Apple Silicon; "
                          "auto takes it there when installed, pytorch elsewhere (default %(default)s)")
    run.add_argument("--no-promote", action="store_true",
                     help="stay on the chosen model; only say when a larger one the swarm lacks would fit")
    _add_compute(run, NODE.compile)
    _add_compaction(run)
    run.add_argument("--cache-gb", type=float, default=NODE.stage_limits.cache_bytes / 2**30,
                     help="KV cache reserved across all sessions on this node (default %(default)g)")
    run.add_argument("--max-sessions", type=int, default=NODE.stage_limits.max_sessions)
    run.add_argument("--max-batch", type=int, default=NODE.stage_limits.max_batch,
                     help="decode steps of concurrent sessions run as one forward pass, at most this "
                          "many (default %(default)s; 1: no batching)")
    run.add_argument("--batch-window-ms", type=float, metavar="MS",
                     help="how long a batch waits for sessions due to step (default: as long as a "
                          "batch takes to compute)")
    run.add_argument("--rate-limit", type=int, default=NODE.api.rate_limit,
                     help="API requests per window per client address (default %(default)s)")
    run.add_argument("--rate-window", type=float, default=NODE.api.rate_window, metavar="SECONDS")
    run.add_argument("--default-max-tokens", type=int, default=NODE.api.default_max_tokens,
                     help="tokens generated when a request gives no limit (default %(default)s)")
    _add_privacy(run)
    _add_verification(run)
    run.add_argument("--federation", action="append", metavar="MULTIADDR",
                     help="a HYDRA token federation member to follow (repeatable; default: ask the "
                          "--bootstrap signposts)")
    run.add_argument("--mint-every", type=float, default=NODE.token.mint_every_s, metavar="SECONDS",
                     help="how often to claim HYDRA for the receipts this node's stage earned "
                          "(default %(default)g)")
    run.add_argument("--channel-deposit", type=float, default=NODE.token.channel_deposit / 1e6,
                     metavar="HYDRA",
                     help="pay the peers this node pays over channels, opening one of up to this "
                          "deposit where none is open (default %(default)g: receipts only)")
    run.set_defaults(func=cmd_run)

    gen = sub.add_parser("generate", help="generate from a prompt through the swarm (or locally)")
    _add_common(gen)
    _add_discovery(gen)
    gen.add_argument("prompt")
    gen.add_argument("--model", help="catalog id or alias (default: the catalog's default)")
    gen.add_argument("--model-path", type=Path, metavar="DIR",
                     help="local checkpoint (config.json + safetensors) instead of the catalog source")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the chat template")
    gen.add_argument("--max-tokens", type=int, default=GENERATE_SAMPLING.max_tokens)
    gen.add_argument("--temperature", type=float, default=GENERATE_SAMPLING.temperature,
                     help="0 (default): greedy")
    gen.add_argument("--top-p", type=float, default=GENERATE_SAMPLING.top_p)
    gen.add_argument("--top-k", type=int, default=GENERATE_SAMPLING.top_k)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--repetition-penalty", type=float,
                     default=GENERATE_SAMPLING.repetition_penalty)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--wait", type=float, default=GenerateConfig.wait,
                     help="seconds to wait for peers covering the model")
    _add_compute(gen, GenerateConfig.compile)
    _add_compaction(gen)
    _add_privacy(gen)
    gen.set_defaults(func=cmd_generate)

    chat = sub.add_parser("chat", help="chat in the terminal with a running node (streams tokens)")
    _add_common(chat)
    chat.add_argument("--api", default=f"http://127.0.0.1:{NODE.api_port}", help="node API URL")
    chat.add_argument("--model", help="model id or alias (default: the node's first model)")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-tokens", type=int, default=CHAT_SAMPLING.max_tokens)
    chat.add_argument("--temperature", type=float, default=CHAT_SAMPLING.temperature)
    chat.add_argument("--seed", type=int)
    chat.set_defaults(func=cmd_chat)

    sp = sub.add_parser("signpost", help="run a bootstrap signpost (DHT only, HTTP DHT adapter)")
    _add_common(sp)
    _add_discovery(sp)
    sp.add_argument("--host", default=SIGNPOST.host, help="libp2p listen address")
    sp.add_argument("--port", type=int, default=SIGNPOST.port)
    sp.add_argument("--http-host", default=SIGNPOST.http_host)
    sp.add_argument("--http-port", type=int, default=SIGNPOST.http_port)
    sp.add_argument("--relay", action="store_true", help="act as a circuit-relay v2 hop")
    sp.add_argument("--ledger", action="store_true",
                    help="keep the HYDRA token log and co-sign it as a federation member "
                         "(alone: a federation of one, for a local swarm)")
    sp.add_argument("--federation", action="append", metavar="MULTIADDR",
                    help="with --ledger: every member in order, this signpost included; the first "
                         "orders the log (repeatable)")
    sp.add_argument("--federation-k", type=int, metavar="K",
                    help="co-signatures an entry needs (default: a majority of the members)")
    sp.set_defaults(func=cmd_signpost)

    kg = sub.add_parser("keygen", help="create the identity key (if absent); print the peer ID")
    _add_common(kg)
    kg.add_argument("--force", action="store_true", help="replace an existing key")
    kg.set_defaults(func=cmd_keygen)

    ident = sub.add_parser("id", help="print this node's peer ID")
    _add_common(ident)
    ident.set_defaults(func=cmd_id)

    st = sub.add_parser("status", help="show a running node's status and the peers it sees")
    _add_common(st)
    st.add_argument("--api", default=f"http://127.0.0.1:{NODE.api_port}",
                    help=f"node API or signpost HTTP DHT (:{SIGNPOST.http_port}) URL")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    acct = sub.add_parser("account", help="a running node's credits and HYDRA; stake, unstake, channels")
    _add_common(acct)
    acct.add_argument("action", nargs="?", choices=["stake", "unstake", "open-channel", "close-channel"],
                      help="stake AMOUNT | unstake AMOUNT | open-channel PEER DEPOSIT | close-channel ID "
                           "(none: show the account)")
    acct.add_argument("values", nargs="*", help="the action's arguments (amounts in HYDRA)")
    acct.add_argument("--api", default=f"http://127.0.0.1:{NODE.api_port}", help="the node's API URL")
    acct.add_argument("--json", action="store_true")
    acct.set_defaults(func=cmd_account)
    return parser


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)


class RoutineDialFailures(logging.Filter):
    """py-libp2p logs an ERROR for every failed dial and handshake (a peer that left, a
    wrong address); OpenHydra reports those itself, once, in its own words."""

    ROUTINE = ("Failed to open TCP stream", "failed to upgrade security", "Failed to open stream",
               "MultiselectClient handshake")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.ROUTINE)


def configure_libp2p_logging(level: str) -> None:
    """Importing libp2p resets its logger (no handler, no propagation): call this after the
    import, or its warnings go to Python's bare last-resort handler."""
    import libp2p  # noqa: F401 - the import is what resets its logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    debug = level.upper() == "DEBUG"
    if not debug:
        handler.addFilter(RoutineDialFailures())
    libp2p_log = logging.getLogger("libp2p")
    libp2p_log.addHandler(handler)
    libp2p_log.setLevel(logging.DEBUG if debug else logging.WARNING)


def _hydra_error(exc: BaseException) -> HydraError | None:
    """The ``HydraError`` behind ``exc``, looking inside trio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, HydraError) else None


def main(argv: list[str] | None = None) -> int:
    """Run one command. A ``HydraError`` (a bad flag, a busy port, no route) prints one line
    and exits with its code; anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling: leave quietly
        print(file=sys.stderr)
        return 130
    except BaseException as exc:
        error = _hydra_error(exc)
        if error is None:
            raise
        print(f"hydra: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
