"""``hydra account``: a running node's barter credits and HYDRA, and the calls that move its
HYDRA (stake, unstake, open and close channels), through the node's local API."""

import json
import sys
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

ACTIONS = {
    "stake": ("/v1/hydra/stake", ("amount",)),
    "unstake": ("/v1/hydra/unstake", ("amount",)),
    "open-channel": ("/v1/hydra/channels/open", ("peer", "deposit")),
    "close-channel": ("/v1/hydra/channels/close", ("id",)),
}


def run_account(api: str, action: str | None, values: list[str], as_json: bool) -> int:
    """Show the account (no ``action``), or perform ``action`` with ``values``; the exit code."""
    try:
        if action is None:
            response = httpx.get(f"{api}/v1/account/balance", timeout=10)
        else:
            path, names = ACTIONS[action]
            if len(values) != len(names):
                print(f"hydra account {action} takes {' '.join(n.upper() for n in names)}", file=sys.stderr)
                return 2
            response = httpx.post(f"{api}{path}", json=dict(zip(names, values, strict=True)), timeout=60)
    except httpx.HTTPError as exc:
        print(f"no node answers at {api}: {exc}", file=sys.stderr)
        return 1
    body = response.json()
    if response.status_code >= 400:
        error = body.get("error", {})
        code = error.get("code") or response.status_code
        print(f"refused ({code}): {error.get('message', body)}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(body, indent=2))
    else:
        show(body if action is None else {"hydra": body})
    return 0


def show(account: dict[str, Any]) -> None:
    console = Console()
    summary = Table(show_header=False, box=None)
    if "barter" in account:
        summary.add_row("barter credits", f"{account['barter']['credits']:.6f} (decay 5%/day)")
    hydra = account.get("hydra") or {}
    if hydra.get("federation") is None and "hydra" not in hydra:
        summary.add_row("HYDRA", "no token federation has answered this node yet")
    else:
        for key in ("hydra", "staked", "burned", "slashed", "supply", "log_length"):
            if key in hydra:
                summary.add_row(key.replace("_", " "), str(hydra[key]))
    console.print(summary)
    channels = hydra.get("channels") or []
    if channels:
        table = Table(title="payment channels")
        for column in ("id", "payer", "payee", "deposit", "paid", "nonce", "closing until"):
            table.add_column(column)
        for c in channels:
            table.add_row(c["id"], c["payer"][-12:], c["payee"][-12:], str(c["deposit"]), str(c["paid"]),
                          str(c["nonce"]), str(c["closing_until"] or "-"))
        console.print(table)
