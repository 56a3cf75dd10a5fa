"""The coordinator's Python API: ``generate`` and ``stream`` over pipelines of peers.

The coordinator holds each requested model's client head (embeddings, final norm, LM head)
and tokenizer: the prompt is tokenised and embedded here, only hidden states go to peers, and
the next token is sampled here from the last stage's output. The HTTP API (OpenAI/Ollama)
and ``hydra generate`` are thin adapters over this module.
"""

import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import trio
from libp2p.abc import IHost
from libp2p.crypto.keys import KeyPair
from transformers.cache_utils import Cache

from hydra.compaction.plan import CompactionPlan
from hydra.coordinator.audit import Auditor
from hydra.coordinator.params import DRAFT_TOKENS, SamplingParams, check_draft_tokens
from hydra.coordinator.pipeline import Pipeline, PipelineConfig
from hydra.coordinator.prefix import PrefixMemory, prefix_chain
from hydra.coordinator.redundancy import RedundantPipeline
from hydra.coordinator.routing import Candidate, candidates_for, plan_route
from hydra.coordinator.rtt import RttTable
from hydra.coordinator.sampling import Sampler
from hydra.coordinator.speculation import DraftModel, PromptLookup, check_drafts, speculable
from hydra.coordinator.text import TextAssembler
from hydra.dht.kademlia import Dht
from hydra.dht.keyspace import SWARM_KEY, model_key
from hydra.economy.ledger import DAILY_DECAY, MICRO, Ledger
from hydra.economy.receipts import SELF
from hydra.economy.service import TokenService
from hydra.errors import ConfigError, HydraError, InvalidRequest
from hydra.models.catalog import Catalog, ModelSpec
from hydra.privacy.config import PrivacyConfig
from hydra.privacy.dp import add_noise
from hydra.runtime.batcher import Batcher
from hydra.runtime.compute import run_compute
from hydra.runtime.shard import ClientHead, StageBlocks, load_head, load_stage
from hydra.runtime.sources import resolve_checkpoint
from hydra.stage.audit import VerifyConversation
from hydra.stage.links import VERIFY_LINK, Link, LocalLink, RemoteLink
from hydra.stage.receipts import pay
from hydra.stage.server import StageServer
from hydra.verification.config import VerificationConfig
from hydra.verification.reputation import NEUTRAL, Reputation
from protocols import inference
from protocols.receipt import ReceiptBody

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    prompt: str | None = None  # raw text, or:
    messages: tuple[Mapping[str, str], ...] = ()  # chat turns, rendered with the chat template
    params: SamplingParams = SamplingParams()
    prompt_ids: tuple[int, ...] = ()  # token ids instead of text (OpenAI accepts these)
    top_logprobs: int | None = None  # report each token's logprob and this many alternatives
    # a model without a chat template gets ``messages`` as plain text instead of a refusal
    # (Ollama's /api/generate, whose default template is the prompt itself)
    plain_without_template: bool = False
    record_logits: bool = False  # keep every step's logits (tests)
    probe: bool = False  # a synthetic prompt of the auditor's, not a user's
    priority: bool = False  # burn HYDRA so that full stages admit this request first
    kv_compaction: str | None = None  # off | on | auto: the node's --kv-compaction-mode if None
    kv_compaction_ratio: float | None = None  # ... and its --kv-compaction-ratio


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Delta:
    """One generated token (``token_ids``) and the text it decided, which may be empty while
    a possible stop string or an incomplete character is held back; the last delta may carry
    only held-back text."""

    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Completion:
    model: str
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    prompt_tokens: int
    ttft_s: float
    duration_s: float
    route: list[str]  # peer ids of the last route used
    failovers: int
    token_seconds: list[float] = field(default_factory=list)  # interval before each token after the first
    hop_seconds: list[float] = field(default_factory=list)  # per step: round trip / hops
    commitment_bytes: int = 0  # the stages' commitments this generation received
    logits: list[torch.Tensor] = field(default_factory=list)
    dp_audit_key: bytes = b""  # with dp_tags, proves which noise each step carried
    dp_tags: list[bytes] = field(default_factory=list)
    drafted: int = 0  # tokens drafted for speculative decoding
    accepted: int = 0  # ... and accepted (each saved a step)

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first over the time after the first (0 with under two tokens)."""
        decode_s = self.duration_s - self.ttft_s
        return (self.completion_tokens - 1) / decode_s if self.completion_tokens > 1 else 0.0


@dataclass
class Progress:
    """What one generation has decided so far, and when."""

    context: list[int]  # prompt and tokens so far
    text: TextAssembler
    started: float
    max_tokens: int
    record_logits: bool
    drafter: DraftModel | None = None  # drafts when prompt lookup has none
    lookup: PromptLookup = field(default_factory=PromptLookup)  # drafts for speculative decoding
    logits: list[torch.Tensor] = field(default_factory=list)
    token_seconds: list[float] = field(default_factory=list)
    ttft: float = 0.0
    last_at: float = 0.0
    finish: str = "length"
    done: bool = False
    drafted: int = 0
    accepted: int = 0

    def __post_init__(self) -> None:
        self.lookup.extend(self.context)

    @property
    def tokens_left(self) -> int:
        return self.max_tokens - len(self.text.ids)

    def decided(self, row: torch.Tensor) -> None:
        """A token was decided now, from logits ``row``."""
        if self.record_logits:
            self.logits.append(row)
        now = time.perf_counter()
        if not self.ttft:
            self.ttft = now - self.started
        else:
            self.token_seconds.append(now - self.last_at)
        self.last_at = now


@dataclass
class LoadedModel:
    spec: ModelSpec
    head: ClientHead
    tokenizer: Any
    eos_ids: frozenset[int]
    max_positions: int
    path: Path
    prefixes: dict[int, StageBlocks] = field(default_factory=dict)  # first k blocks, run here
    drafter: tuple[StageBlocks, ClientHead] | None = None  # the catalog's draft model, whole


@dataclass
class LocalSteps:
    """What happens to a step's activations before they leave this node: its first blocks run
    here (``--local-layers``), then DP noise (``--dp-noise-sigma``), each step's noise tagged
    so that whoever holds ``audit_key`` can verify it later."""

    prefix: StageBlocks | None
    sigma: float
    cache: Cache | None = None
    audit_key: bytes = b""
    tags: list[bytes] = field(default_factory=list)

    @classmethod
    def start(cls, prefix: StageBlocks | None, sigma: float) -> "LocalSteps":
        """The state of one generation's local steps."""
        cache = prefix.new_cache() if prefix is not None else None
        return cls(prefix, sigma, cache, secrets.token_bytes(32) if sigma else b"")

    @property
    def undoable(self) -> bool:
        """Whether a drafted step's rejected tokens can be dropped here (no local blocks or
        noise, which would need their own rewind)."""
        return self.prefix is None and not self.sigma

    async def apply(self, hidden: torch.Tensor, position: int) -> torch.Tensor:
        if self.prefix is not None:
            hidden = await run_compute(self.prefix.forward, hidden, self.cache, position)
        if self.sigma:
            hidden, tag = await run_compute(add_noise, hidden, self.sigma, self.audit_key, position)
            self.tags.append(tag)
        return hidden


class Coordinator:
    def __init__(
        self,
        host: IHost,
        dht: Dht | None,
        catalog: Catalog,
        local: StageServer | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device = torch.device("cpu"),
        step_timeout: float = 30.0,
        checkpoints: Mapping[str, Path] | None = None,
        privacy: PrivacyConfig = PrivacyConfig(),
        verification: VerificationConfig = VerificationConfig(),
        reputation: Reputation | None = None,
        ledger: Ledger | None = None,
        tokens: TokenService | None = None,
        quantization: str = "none",
        compile: bool = False,
        draft_tokens: int = DRAFT_TOKENS,
        wire_dtype: str = "auto",
        compaction: CompactionPlan = CompactionPlan(),
    ) -> None:
        self.host = host
        self.dht = dht
        self.catalog = catalog
        self.local = local
        self.dtype = dtype
        self.device = device
        self.step_timeout = step_timeout
        self.quantization = quantization  # of the client head and --local-layers blocks
        self.compile = compile  # the --local-layers blocks' decode steps
        self.draft_tokens = check_draft_tokens(draft_tokens)  # speculative decoding's drafts a step (0: off)
        self.wire_dtype = wire_dtype  # of activations between stages; auto: the catalog's per model
        self.compaction = compaction  # of the stages' KV caches, unless a request says otherwise
        self.prefixes = PrefixMemory()  # which prompt blocks each route's stages keep
        self.prefix_salt = secrets.token_bytes(32)  # salts this coordinator's prompt blocks
        self.privacy = privacy
        self.checkpoints = dict(checkpoints or {})  # model id -> local checkpoint directory
        self.ledger = local.ledger if local is not None else ledger or Ledger()  # one per node
        self.reputation = reputation or Reputation()
        self.tokens = tokens  # the HYDRA token: None for a coordinator without a node (hydra generate)
        self.auditor = Auditor(self, verification, self.reputation)
        self.rtt_table = RttTable(dht, on_sample=self.reputation.record_latency)
        self.models: dict[str, LoadedModel] = {}
        self._loading = trio.Lock()
        self.active_pipelines: set[Pipeline | RedundantPipeline] = set()
        self._found: dict[str, tuple[float, list[Candidate]]] = {}  # model -> (when, last lookup)
        # concurrent generations' next tokens: one pass through the head for all of a model's
        self.decisions: Batcher[Decision, tuple[torch.Tensor, int]] = Batcher(decide, MAX_DECISIONS)

    @property
    def peer_id(self) -> str:
        return self.host.get_id().to_base58()

    @property
    def identity(self) -> KeyPair:
        return KeyPair(self.host.get_private_key(), self.host.get_public_key())

    @property
    def verification(self) -> VerificationConfig:
        """How this coordinator checks stages: its auditor's settings (one copy of them)."""
        return self.auditor.config

    def status(self) -> dict[str, Any]:
        """What ``/v1/network/status`` and ``hydra status`` show of this coordinator."""
        return {
            "generations": self.live_routes(),
            "verification": self._verification_status(),
            "reputation": self._reputation_status(),
            "economy": {
                "barter": self.barter_status(),
                "hydra": self.tokens.status() if self.tokens is not None else {"federation": None},
            },
        }

    def live_routes(self) -> list[dict[str, Any]]:
        """The generations this node coordinates now: each route's hops and how far it is."""
        return [
            {
                "model": pipeline.config.model,
                "position": pipeline.position,
                "failovers": pipeline.failovers,
                "route": [
                    {"peer_id": c.peer_id, "layers": [c.hop.layer_start, c.hop.layer_end], "local": c.local}
                    for c in pipeline.route
                ],
            }
            for pipeline in self.active_pipelines
        ]

    def barter_status(self) -> dict[str, Any]:
        """This node's barter credits: earned serving minus spent consuming, decayed."""
        micro = self.ledger.balance(SELF)
        return {"credits": micro / MICRO, "micro_credits": micro, "decay_per_day": round(1 - DAILY_DECAY, 4)}

    def _verification_status(self) -> dict[str, Any]:
        stats = self.auditor.stats
        return {
            "verify_rate": self.verification.verify_rate,
            "probes_only": self.verification.probes_only,
            "redundancy": self.verification.redundancy,
            "min_reputation": self.verification.min_reputation,
            "probes_run": stats.probes,
            "audits": {"chosen": stats.chosen, "passed": stats.passed, "failed": stats.failed,
                       "unverifiable": stats.unverifiable, "dropped": stats.dropped},
        }

    def _reputation_status(self) -> list[dict[str, Any]]:
        return [
            {**dataclasses.asdict(score), "admissible": score.total >= self.verification.min_reputation}
            for score in self.reputation.table()
        ]

    def admissible(self, peer_id: str) -> bool:
        """Whether ``peer_id``'s reputation lets new routes (and audits) use it."""
        return self.reputation.score(peer_id).total >= self.verification.min_reputation

    # --- the pipeline's view of the network ----------------------------------------------

    async def candidates(self, model: str, max_age: float = 0.0) -> list[Candidate]:
        """Peers serving blocks of ``model`` now: this node's own stage, and those a fresh DHT
        lookup finds (their round-trip times measured on the way); ``max_age`` > 0 accepts the
        last lookup's answer if it is that recent (audits looking for a verifier)."""
        spec = self.catalog.resolve(model)
        cached = self._found.get(spec.id)
        if cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        found = await self._remote_candidates(spec) if self.dht is not None else []
        found += self._local_candidates(spec)
        self._found[spec.id] = (time.monotonic(), found)
        return found

    def _local_candidates(self, spec: ModelSpec) -> list[Candidate]:
        if self.local is None or self.local.model_id != spec.id:
            return []
        blocks, kx = self.local.blocks, self.local.kx
        addrs = tuple(str(a) for a in self.host.get_addrs()) or ("/local",)
        hop = inference.Hop(self.peer_id, addrs, blocks.layer_start, blocks.layer_end)
        return [Candidate(hop, local=True, kx_key=kx.public, kx_signature=kx.signature,
                          model_hash=blocks.model_hash, dtype=blocks.precision)]

    async def routable(self) -> set[str]:
        """The catalog models a complete route serves now, from one lookup of the swarm
        directory (every announcing peer's latest record), for listings and degradation."""
        entries = await self.dht.get(SWARM_KEY) if self.dht is not None else []
        records = [e.record for e in entries if e.record.peer_id != self.peer_id]
        found = set()
        for spec in self.catalog.models:
            candidates = candidates_for(records, spec.id, spec.num_layers) + self._local_candidates(spec)
            first = self.privacy.local_layers
            if plan_route(candidates, spec.num_layers, self.rtt_table.values, first=first):
                found.add(spec.id)
        return found

    async def _remote_candidates(self, spec: ModelSpec) -> list[Candidate]:
        assert self.dht is not None
        entries = await self.dht.get(model_key(spec.id))
        found = [
            c
            for c in candidates_for((e.record for e in entries), spec.id, spec.num_layers)
            if c.peer_id != self.peer_id
        ]
        await self.rtt_table.measure(found)
        return found

    async def plan(self, model: str, exclude: frozenset[str] = frozenset()) -> list[Candidate] | None:
        """The cheapest route now over the peers serving ``model``, avoiding ``exclude``; None
        when they do not cover its blocks. A request plans once, at admission, and opens its
        pipeline along that route (``stream(request, route)``); only a failover plans again."""
        spec = self.catalog.resolve(model)
        candidates = await self.candidates(spec.id)
        first = self.privacy.local_layers  # blocks this coordinator runs itself
        scores = {c.peer_id: self.reputation.score(c.peer_id).total for c in candidates}
        shunned = frozenset(p for p, score in scores.items() if score < self.verification.min_reputation)
        # a hop costs more the further its peer scores below NEUTRAL, less the more it has staked
        weights = {p: 1.0 + NEUTRAL - score for p, score in scores.items()}
        rtt = self.rtt_table.values
        route = plan_route(candidates, spec.num_layers, rtt, exclude | shunned, first, weights)
        if route is None and shunned:
            log.warning("no route for %s without the peers below --min-reputation: %s", spec.id,
                        ", ".join(f"{p} ({scores[p]:.2f})" for p in sorted(shunned)))
        return route

    async def route_available(self, model: str) -> bool:
        return await self.plan(model) is not None

    async def link(self, candidate: Candidate, timeout: float) -> Link:
        if candidate.local:
            assert self.local is not None
            return self.local.local_link(self.peer_id)
        return await RemoteLink.open(self.host, candidate.hop, timeout)

    async def priority_ticket(self) -> bytes:
        """A ticket that makes full stages admit this node's sessions first (HYDRA burned)."""
        if self.tokens is None:
            raise InvalidRequest("priority needs HYDRA, and this coordinator holds none", "service_tier")
        return await self.tokens.priority_ticket()

    async def pay(self, hop: inference.Hop, body: ReceiptBody) -> bool:
        return await pay(self.host, self.identity, self.ledger, hop, body, self.tokens)

    async def verify_link(self, candidate: Candidate, timeout: float) -> Link:
        """Where challenges for a route starting at ``candidate`` go."""
        if candidate.local:
            assert self.local is not None
            local = self.local
            return LocalLink(self.peer_id, lambda _: VerifyConversation(local, self.peer_id))
        return await RemoteLink.open(self.host, candidate.hop, timeout, VERIFY_LINK)

    # --- models ----------------------------------------------------------------------------

    async def load(self, name: str) -> LoadedModel:
        """The client head and tokenizer of ``name`` (loaded once, off the event loop)."""
        spec = self.catalog.resolve(name)
        async with self._loading:
            if spec.id not in self.models:
                self.models[spec.id] = await run_compute(self._load_blocking, spec)
        return self.models[spec.id]

    def _load_blocking(self, spec: ModelSpec) -> LoadedModel:
        from transformers import AutoTokenizer, GenerationConfig

        path = resolve_checkpoint(spec, self.checkpoints.get(spec.id))
        head = load_head(path, self.dtype, self.device, self.quantization)
        tokenizer = AutoTokenizer.from_pretrained(path)
        eos: set[int] = set()
        try:
            configured = GenerationConfig.from_pretrained(path).eos_token_id
            eos.update(configured if isinstance(configured, list) else [configured])
        except OSError:
            pass
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        eos.discard(None)  # type: ignore[arg-type]
        max_positions = int(getattr(head.config, "max_position_embeddings", 0) or 1 << 15)
        drafter = self._load_drafter(spec, head) if self.draft_tokens else None
        return LoadedModel(spec, head, tokenizer, frozenset(eos), max_positions, path, drafter=drafter)

    def _load_drafter(self, spec: ModelSpec, head: ClientHead) -> tuple[StageBlocks, ClientHead] | None:
        """The draft model the catalog names for ``spec``, whole, if its weights are at hand
        and it speaks the same vocabulary (drafting is an optimisation: without it, prompt
        lookup alone drafts)."""
        if spec.draft_model is None:
            return None
        try:
            draft = self.catalog.resolve(spec.draft_model)
            path = resolve_checkpoint(draft, self.checkpoints.get(draft.id))
            drafter = load_head(path, self.dtype, self.device, self.quantization)
            if drafter.config.vocab_size != head.config.vocab_size:
                log.warning("draft model %s has another vocabulary than %s: not used", draft.id, spec.id)
                return None
            blocks = load_stage(path, 0, draft.num_layers, self.dtype, self.device, self.quantization)
        except HydraError as exc:
            log.warning("draft model %s not loaded (%s): prompt lookup only", spec.draft_model, exc)
            return None
        return blocks, drafter

    async def prefix(self, model: LoadedModel) -> StageBlocks | None:
        """The blocks this coordinator runs itself (``--local-layers``), loaded once."""
        k = self.privacy.local_layers
        if not k:
            return None
        if k >= model.spec.num_layers:
            raise ConfigError(f"--local-layers {k}: {model.spec.id} has {model.spec.num_layers} blocks")
        if k not in model.prefixes:
            model.prefixes[k] = await run_compute(
                load_stage, model.path, 0, k, self.dtype, self.device, self.quantization, self.compile
            )
        return model.prefixes[k]

    def prompt_ids(self, model: LoadedModel, request: GenerationRequest) -> list[int]:
        if request.prompt_ids:
            vocab = model.head.config.vocab_size
            if not all(0 <= i < vocab for i in request.prompt_ids):
                raise InvalidRequest(f"prompt token ids must be in [0, {vocab})")
            return list(request.prompt_ids)
        if request.messages and not getattr(model.tokenizer, "chat_template", None):
            if not request.plain_without_template:
                raise InvalidRequest(
                    f"{model.spec.id} has no chat template: send a plain prompt (/v1/completions)"
                )
            return model.tokenizer("\n\n".join(m["content"] for m in request.messages))["input_ids"]
        if request.messages:
            rendered = model.tokenizer.apply_chat_template(
                [dict(m) for m in request.messages], add_generation_prompt=True, tokenize=False
            )
            return model.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if request.prompt is None:
            raise InvalidRequest("give a prompt or messages")
        return model.tokenizer(request.prompt)["input_ids"]

    def system_tokens(self, model: LoadedModel, request: GenerationRequest, prompt: list[int]) -> int:
        """How many leading tokens of ``prompt`` render a system message alone: a prefix other
        users' requests share (0 when there is none)."""
        if not request.messages or request.messages[0].get("role") != "system":
            return 0
        if not getattr(model.tokenizer, "chat_template", None):
            return 0
        rendered = model.tokenizer.apply_chat_template([dict(request.messages[0])], tokenize=False)
        ids = model.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        return len(ids) if prompt[: len(ids)] == ids else 0

    # --- generation --------------------------------------------------------------------------

    async def generate(
        self, request: GenerationRequest, route: list[Candidate] | None = None
    ) -> Completion:
        events = self.stream(request, route)
        try:
            async for event in events:
                if isinstance(event, Completion):
                    return event
        finally:
            await events.aclose()
        raise AssertionError("stream ended without a completion")

    async def stream(
        self, request: GenerationRequest, route: list[Candidate] | None = None
    ) -> AsyncIterator[Delta | Completion]:
        """Yield text deltas as tokens are decided, then the ``Completion``. ``route``: the
        route ``plan`` chose when the request was admitted (planned here when not given)."""
        started = time.perf_counter()
        model = await self.load(request.model)
        params = request.params
        prompt = self.prompt_ids(model, request)
        if not prompt:
            raise InvalidRequest("the prompt is empty")
        max_length = min(len(prompt) + params.max_tokens, model.max_positions, inference.MAX_LENGTH)
        if len(prompt) >= max_length:
            raise InvalidRequest(
                f"the prompt ({len(prompt)} tokens) leaves no room to generate: {model.spec.id} "
                f"reads at most {min(model.max_positions, inference.MAX_LENGTH)} tokens in all",
                "messages" if request.messages else "prompt",
            )
        sampler = Sampler(params)
        text = TextAssembler(model.tokenizer, params.stop)
        privacy = self.privacy
        local = LocalSteps.start(await self.prefix(model), privacy.dp_noise_sigma)
        system = self.system_tokens(model, request, prompt)
        config = PipelineConfig(
            model.spec.id, model.spec.num_layers, max_length,
            dtype=model.spec.wire_dtype if self.wire_dtype == "auto" else self.wire_dtype,
            step_timeout=self.step_timeout,
            protect=privacy.protect, direct_return=not privacy.relayed_return, probe=request.probe,
            priority=await self.priority_ticket() if request.priority else b"",
            prefix=prefix_chain(prompt, self.prefix_salt, system),
            reuse_limit=len(prompt) - 1 if local.undoable else 0,  # local blocks need the whole prompt
            public_blocks=system // inference.PREFIX_BLOCK,
            compaction=self._compaction(request),
        )
        drafter = DraftModel(*model.drafter) if model.drafter is not None else None
        progress = Progress(list(prompt), text, started, params.max_tokens, request.record_logits, drafter)
        async with self._pipeline(config, route) as pipeline:
            self.active_pipelines.add(pipeline)
            drafting = bool(self.draft_tokens) and speculable(sampler) and local.undoable
            drafting = drafting and isinstance(pipeline, Pipeline)
            try:
                inputs = prompt
                while not progress.done and has_room(pipeline, len(inputs), max_length):
                    room = min(max_length - pipeline.position, progress.tokens_left) - 1
                    drafts = []
                    if drafting and len(inputs) == 1:
                        drafts = await self._drafts(progress, min(self.draft_tokens, room))
                    hidden = await local.apply(await self._embed(model, inputs + drafts), pipeline.position)
                    decided = await self._decide(model, sampler, pipeline, hidden, progress.context, drafts)
                    progress.drafted += len(drafts)
                    progress.accepted += len(decided) - 1
                    for row, token in decided:
                        delta = await self._delta(model, request, progress, row, token)
                        if delta is not None:
                            yield delta
                        if progress.done:
                            break
                    inputs = [decided[-1][1]]
            finally:
                self.active_pipelines.discard(pipeline)
                self.decisions.leave(pipeline)
            rest = text.finish()
            if rest:
                yield Delta(rest, [])
            if not request.probe:
                self.auditor.after_generation(model.spec.id, pipeline.route)
            yield Completion(
                model=model.spec.id,
                text=text.text,
                token_ids=list(text.ids),
                finish_reason=progress.finish,
                prompt_tokens=len(prompt),
                ttft_s=progress.ttft,
                duration_s=time.perf_counter() - started,
                route=[c.peer_id for c in pipeline.route],
                failovers=pipeline.failovers,
                token_seconds=progress.token_seconds,
                hop_seconds=list(pipeline.hop_seconds),
                commitment_bytes=pipeline.commitment_bytes,
                logits=progress.logits,
                dp_audit_key=local.audit_key,
                dp_tags=local.tags,
                drafted=progress.drafted,
                accepted=progress.accepted,
            )

    async def _delta(
        self, model: LoadedModel, request: GenerationRequest, progress: Progress, row: torch.Tensor,
        token: int,
    ) -> Delta | None:
        """Take ``token`` (decided from logits ``row``): its delta, None for an end of sequence."""
        progress.decided(row)
        if token in model.eos_ids:
            progress.finish, progress.done = "stop", True
            return None
        progress.context.append(token)
        progress.lookup.extend([token])
        logprobs = []
        if request.top_logprobs is not None:
            logprobs = [await run_compute(token_logprob, model.tokenizer, row, token, request.top_logprobs)]
        delta = Delta(progress.text.push(token), [token], logprobs)
        if progress.text.stopped:
            progress.finish, progress.done = "stop", True
        progress.done = progress.done or progress.tokens_left == 0
        return delta

    def _compaction(self, request: GenerationRequest) -> CompactionPlan | None:
        """The request's KV compaction: the node's, with the request's mode and ratio if it
        gives them; none with ``--redundancy`` (routes granted different caches would compact
        at different steps, and their outputs could no longer be compared)."""
        plan = self.compaction
        if request.kv_compaction is not None:
            plan = replace(plan, mode=request.kv_compaction)
        if request.kv_compaction_ratio is not None:
            plan = replace(plan, ratio=request.kv_compaction_ratio)
        if plan.mode == "off" or self.verification.redundancy > 1:
            return None
        return plan

    def _pipeline(
        self, config: PipelineConfig, route: list[Candidate] | None
    ) -> Pipeline | RedundantPipeline:
        """One pipeline, or ``--redundancy`` of them stepped together."""
        copies = self.verification.redundancy
        if copies == 1:
            return Pipeline(self, config, route, auditor=self.auditor)
        members = [
            Pipeline(self, config, route if i == 0 else None, auditor=self.auditor) for i in range(copies)
        ]
        return RedundantPipeline(members, self.catalog.resolve(config.model))

    async def _drafts(self, progress: Progress, tokens: int) -> list[int]:
        """Up to ``tokens`` drafts: prompt lookup's, else the draft model's."""
        if tokens < 1:  # the last token the request or the session has room for
            return []
        drafts = progress.lookup.draft(tokens)
        if drafts or progress.drafter is None:
            return drafts
        return await run_compute(progress.drafter.draft, progress.context, tokens)

    async def _decide(
        self, model: LoadedModel, sampler: Sampler, pipeline: "Pipeline | RedundantPipeline",
        hidden: torch.Tensor, context: list[int], drafts: list[int],
    ) -> list[tuple[torch.Tensor, int]]:
        """The next tokens and their logits: one, or (with ``drafts``) those the drafts let one
        step decide, the rest of the drafted step then dropped (``hydra.coordinator.speculation``)."""
        if not drafts:
            output = await pipeline.forward(hidden)
            decision = Decision(model.head, sampler, output, context)
            return [await self.decisions.submit(decision, model.spec.id, pipeline)]
        assert isinstance(pipeline, Pipeline)
        output = await pipeline.forward(hidden, return_all=True, draft=True)
        decided = await run_compute(check_drafts, model.head, sampler, output, context, drafts)
        pipeline.accept(len(decided))
        return decided

    async def _embed(self, model: LoadedModel, ids: list[int]) -> torch.Tensor:
        return await run_compute(model.head.embed, ids)


MAX_DECISIONS = 32  # sessions whose next tokens one pass through a client head decides


@dataclass(frozen=True)
class Decision:
    """A generation's next token to decide from its pipeline's ``output``."""

    head: ClientHead
    sampler: Sampler
    output: torch.Tensor
    context: list[int]


def decide(decisions: list[Decision]) -> list[tuple[torch.Tensor, int]]:
    """Each generation's next-token logits and the token sampled from them, the logits of all
    (one model's) in one pass through the head. On the compute thread, with the forward
    passes: torch work on the event loop's thread would raise a second OpenMP team there,
    after which every forward pass runs ~1.7x slower (measured on 2 cores)."""
    rows = decisions[0].head.next_logits_of([d.output for d in decisions])
    return [(row, d.sampler.next_token(row, d.context)) for row, d in zip(rows, decisions, strict=True)]


def token_logprob(tokenizer: Any, logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """The model's log-probability of ``token`` and of the ``top`` likeliest tokens."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best = torch.topk(logprobs, top) if top else None
    alternatives = (
        tuple((tokenizer.decode([int(i)]), float(v)) for v, i in zip(best.values, best.indices, strict=True))
        if best is not None
        else ()
    )
    return TokenLogprob(tokenizer.decode([token]), float(logprobs[token]), alternatives)


def has_room(pipeline: Pipeline | RedundantPipeline, tokens: int, max_length: int) -> bool:
    """Whether the sessions can take ``tokens`` more: within ``max_length``, and within the
    cache a session compacted once (phases 1 to 3) has left."""
    if pipeline.position + tokens > max_length:
        return False
    room = pipeline.room() if isinstance(pipeline, Pipeline) else None
    return room is None or room >= tokens
