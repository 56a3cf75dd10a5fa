#!/usr/bin/env python3
"""What the first remote stage can recover of a prompt from the activations it must see.

The first remote stage sees, per prompt token, the activations the coordinator sends: the
token embeddings themselves (unprotected), the hidden states after the first k blocks when
the coordinator runs them (``--local-layers k``), or either with Gaussian noise added
(``--dp-noise-sigma``). Onion routing and sealing do not change this view: they protect
everything else. Two inversion attacks run on that view, on held-out prompts:

  - nearest embedding: each observed vector is matched to the closest token embedding
    (cosine); exact for raw embeddings
  - linear probe: a least-squares map from observed vectors to the true tokens' embeddings,
    trained on other text the attacker runs through the same public model, then nearest
    embedding; the attacker knows k and sigma

Each setting's cost in output quality is measured through the coordinator's real generation
path (SmolLM2, greedy): the fraction of generated tokens equal to the unprotected run's.

Usage: scripts/privacy_attack.py [--tokens 24] [--prompts 6] [--local-layers 1 2 4 8]
           [--sigmas 0.01 0.02 0.05 0.1]
"""

import argparse
import secrets

import torch
import trio
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer

from hydra.coordinator.generation import Coordinator, GenerationRequest
from hydra.coordinator.params import SamplingParams
from hydra.dht.config import DiscoveryConfig
from hydra.dht.service import open_dht_peer
from hydra.models.catalog import load_catalog
from hydra.privacy.config import PrivacyConfig
from hydra.privacy.dp import add_noise
from hydra.runtime.shard import ClientHead, load_head, load_stage
from hydra.runtime.sources import resolve_checkpoint
from hydra.stage.limits import StageLimits
from hydra.stage.server import StageServer

TRAIN = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Our quarterly revenue grew by twelve percent compared to last year.",
    "Please send the signed contract to the legal department by Friday.",
    "The patient reported mild headaches and occasional dizziness after meals.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "My password reset link expired before I could open the email.",
    "The committee will review all applications in the order received.",
    "Heavy rain is expected across the northern region this weekend.",
    "She deposited three thousand dollars into her savings account yesterday.",
    "The algorithm sorts the list in place using constant extra memory.",
    "Remember to water the tomatoes every morning during the summer.",
    "The museum opens at nine and closes at five on weekdays.",
    "He was diagnosed with a rare condition affecting his left kidney.",
    "Our team shipped the new login page after two weeks of testing.",
    "The train to Berlin departs from platform seven at noon.",
    "Mix the flour, sugar and eggs before adding the melted butter.",
    "The defendant denied all charges and requested a jury trial.",
    "Customers can return unused items within thirty days of purchase.",
    "The satellite entered a stable orbit around the planet last night.",
    "I think we should move the meeting to Thursday afternoon instead.",
    "The library extended its opening hours for the exam period.",
    "Interest rates are likely to stay unchanged until next spring.",
    "The recipe calls for two cups of rice and a pinch of salt.",
    "Engineers found a crack in the bridge during the annual inspection.",
    "Your appointment with Dr. Smith is confirmed for Monday at ten.",
    "The startup raised a seed round from several angel investors.",
    "Children under twelve must be accompanied by an adult at all times.",
    "The server crashed because the disk ran out of free space.",
    "Birds migrate south when the days grow shorter and colder.",
    "We need to renew the lease on the office before it expires.",
]
TEST = [
    "My bank account number is listed on the attached statement.",
    "The doctor prescribed antibiotics for the infection in my throat.",
    "Please keep the merger with the other company strictly confidential.",
    "I will be home late tonight because of the board meeting.",
    "The secret ingredient in the sauce is smoked paprika and honey.",
    "Her salary will increase once the new contract is signed.",
    "The lawyer advised us not to discuss the case with anyone.",
    "Our new product launches in March with a large marketing campaign.",
]
LOCAL_LAYERS = [1, 2, 4, 8]
SIGMAS = [0.01, 0.02, 0.05, 0.1]


class View:
    """The activations the first remote stage receives for a text, under a setting."""

    def __init__(self, checkpoint, head: ClientHead, tokenizer, k: int, sigma: float) -> None:
        self.head, self.tokenizer, self.sigma = head, tokenizer, sigma
        self.prefix = load_stage(checkpoint, 0, k, torch.float32, torch.device("cpu")) if k else None
        self.key = secrets.token_bytes(32)

    def __call__(self, text: str) -> tuple[list[int], torch.Tensor]:
        ids = self.tokenizer(text)["input_ids"]
        hidden = self.head.embed(ids)
        if self.prefix is not None:
            hidden = self.prefix.forward(hidden, self.prefix.new_cache(), 0)
        if self.sigma:
            hidden, _ = add_noise(hidden, self.sigma, self.key, 0)
        return ids, hidden[0].float()


def nearest_tokens(vectors: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    vectors = torch.nn.functional.normalize(vectors, dim=-1)
    return (vectors @ torch.nn.functional.normalize(table, dim=-1).T).argmax(dim=-1)


def attacks(view: View, table: torch.Tensor) -> tuple[float, float]:
    """Fraction of held-out prompt tokens recovered: nearest embedding, linear probe."""
    observed, ids = zip(*((h, torch.tensor(i)) for i, h in map(view, TRAIN)), strict=True)
    x, y = torch.cat(observed), table[torch.cat(ids)]
    ridge = 1e-2 * torch.eye(x.shape[1])
    probe = torch.linalg.solve(x.T @ x + ridge, x.T @ y)  # least squares: observed -> embedding
    hits_nearest = hits_probe = total = 0
    for text in TEST:
        token_ids, hidden = view(text)
        truth = torch.tensor(token_ids)
        hits_nearest += int((nearest_tokens(hidden, table) == truth).sum())
        hits_probe += int((nearest_tokens(hidden @ probe, table) == truth).sum())
        total += len(token_ids)
    return hits_nearest / total, hits_probe / total


async def generations(checkpoint, privacy: PrivacyConfig, prompts: list[str], tokens: int) -> list[list[int]]:
    """Greedy outputs through the coordinator's real path, with blocks [k, L) as a stage."""
    catalog = load_catalog()
    spec = catalog.resolve("smollm2")
    blocks = load_stage(checkpoint, privacy.local_layers, spec.num_layers, torch.float32, torch.device("cpu"))
    async with open_dht_peer(None, "127.0.0.1", 0, DiscoveryConfig()) as peer:
        stage = StageServer(None, spec.id, blocks, StageLimits(), peer.keypair)
        coordinator = Coordinator(peer.host, None, catalog, local=stage, privacy=privacy,
                                  checkpoints={spec.id: checkpoint})
        outputs = []
        for prompt in prompts:
            done = await coordinator.generate(GenerationRequest(
                spec.id, messages=({"role": "user", "content": prompt},),
                params=SamplingParams(max_tokens=tokens)))
            outputs.append(done.token_ids)
        return outputs


def agreement(outputs: list[list[int]], reference: list[list[int]]) -> float:
    same = total = 0
    for got, want in zip(outputs, reference, strict=True):
        length = max(len(got), len(want))
        same += sum(1 for a, b in zip(got, want, strict=False) if a == b)  # may differ in length
        total += length
    return same / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--local-layers", type=int, nargs="+", default=LOCAL_LAYERS, metavar="K")
    parser.add_argument("--sigmas", type=float, nargs="+", default=SIGMAS, metavar="SIGMA")
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = load_catalog().resolve("smollm2")
    checkpoint = resolve_checkpoint(spec)
    head = load_head(checkpoint, torch.float32, torch.device("cpu"))
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    table = head.embed_tokens.weight.detach().float()
    rms = float(table.pow(2).mean().sqrt())
    prompts = TEST[: args.prompts]
    reference = trio.run(generations, checkpoint, PrivacyConfig(), prompts, args.tokens)

    settings = [("unprotected", 0, 0.0)]
    settings += [(f"--local-layers {k}", k, 0.0) for k in args.local_layers]
    settings += [(f"--dp-noise-sigma {s} ({s / rms:.2f}x emb. RMS)", 0, s) for s in args.sigmas]
    k, sigma = min(2, max(args.local_layers)), args.sigmas[min(1, len(args.sigmas) - 1)]
    settings += [(f"--local-layers {k} --dp-noise-sigma {sigma}", k, sigma)]
    table_out = Table(title="Prompt tokens recovered by the first remote stage (held-out prompts)")
    for column in ("setting", "nearest embedding", "linear probe", "greedy agreement"):
        table_out.add_column(column, justify="right")
    for name, k, sigma in settings:
        nearest, probe = attacks(View(checkpoint, head, tokenizer, k, sigma), table)
        privacy = PrivacyConfig(local_layers=k, dp_noise_sigma=sigma)
        quality = agreement(trio.run(generations, checkpoint, privacy, prompts, args.tokens), reference)
        table_out.add_row(name, f"{nearest:.1%}", f"{probe:.1%}", f"{quality:.1%}")
    Console().print(table_out)


if __name__ == "__main__":
    main()
