"""The starter policy `python -m gateway run` applies to a fresh local store, so a newcomer's first requests show
what policies do: a token limit, token metrics and semantic-cache hits (in `try`, `usage` and the dashboard).

"Fresh" means the policy store has never been written (its version row is 0): once an operator deletes the
starter, or applies anything, it is never applied again.
"""

from __future__ import annotations

from gateway.dev.devstack import REPO_ROOT
from gateway.stores.policies import PolicyRepository, apply_document
from policies.document import Scope
from policies.statement import Loader

STARTER = REPO_ROOT / "samples" / "starter.xml"
SCOPE = Scope("global")


async def apply_if_fresh(repository: PolicyRepository, loader: Loader) -> int | None:
    """Apply samples/starter.xml at global scope if the store has never held a document; the new version, or None."""
    if await repository.version() != 0:
        return None
    return await apply_document(repository, SCOPE, STARTER.read_text(encoding="utf-8"), loader)


def announcement() -> str:
    """What `run` prints after applying the starter: what it does and how to remove it."""
    return (
        f"The policy store was empty: applied {STARTER.relative_to(REPO_ROOT)} at scope {SCOPE} (a token limit of 10,000 tokens "
        "per minute per subscription, token metrics, a semantic cache with embeddings from the simulator).\n"
        f"  See it: python -m gateway policies show --scope {SCOPE}    Remove it: python -m gateway policies delete --scope {SCOPE}"
    )
