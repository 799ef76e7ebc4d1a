"""Explorer pages (every host, any role) and the hub's replication dashboard."""

from __future__ import annotations

import json

from django.core.exceptions import BadRequest
from django.http import Http404
from django.shortcuts import render

from accounts.permissions import role_required
from accounts.roles import Role
from chain.selectors import block_get, block_is_verified, block_list, chain_state, chain_status

PAGE_SIZE = 50


def _height_param(value: str | None) -> int | None:
    """``?before=`` as a block height; anything else is a bad request, not a guess."""
    if value is None or value == "":
        return None
    try:
        height = int(value)
    except ValueError:
        raise BadRequest("before must be a block height") from None
    if height < 0:
        raise BadRequest("before must be a block height")
    return height


def _own_status(tenant):
    """This copy's line of ``chain_status`` (the hub's own line on the hub)."""
    statuses = chain_status(only=tenant.slug)
    return statuses[0] if statuses else None


@role_required(*Role.values)
def explorer(request):
    before = _height_param(request.GET.get("before"))
    state = chain_state()
    blocks = list(block_list(before=before, limit=PAGE_SIZE))
    rows = [(block, block_is_verified(block, state)) for block in blocks]
    older = blocks[-1].height if blocks and blocks[-1].height > 0 else None
    return render(
        request,
        "chain/explorer.html",
        {
            "rows": rows,
            "state": state,
            "status": _own_status(request.tenant),
            "before": before,
            "older": older,
            # New blocks are prepended live only on the first page.
            "is_live": before is None,
            "top_height": blocks[0].height if blocks else -1,
        },
    )


@role_required(*Role.values)
def block_detail(request, height: int):
    block = block_get(height=height)
    if block is None:
        raise Http404(f"No block at height {height}.")
    state = chain_state()
    transactions = [
        (item, json.dumps(item.payload, indent=2, sort_keys=True, ensure_ascii=False))
        for item in block.transactions.all()
    ]
    return render(
        request,
        "chain/block.html",
        {
            "chain_block": block,  # "block" is taken by the template engine
            "is_verified": block_is_verified(block, state),
            "transactions": transactions,
            "state": state,
        },
    )


@role_required(Role.OPERATOR)
def dashboard(request):
    # The dashboard lives on the hub's host, so the current schema is the hub's.
    context = {"statuses": chain_status(), "hub_height": chain_state().height}
    return render(request, "hub/dashboard.html", context)
