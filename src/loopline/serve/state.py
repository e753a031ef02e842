"""What the routes share: the served models, recommender, experiments, request log, metrics.

The app's lifespan builds one :class:`ServeState` and keeps it on ``app.state.loopline``;
routes take it with the :func:`get_state` dependency::

    @router.get("/v1/things")
    async def things(state: ServeState = Depends(get_state)) -> dict[str, Any]:
        return {"models": state.models.served()}
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request

from loopline.config import LooplineConfig
from loopline.serve.metrics import ServeMetrics

if TYPE_CHECKING:
    from loopline.registry import ModelRegistry
    from loopline.serve.experiments import ExperimentRouter
    from loopline.serve.model_host import ModelHost
    from loopline.serve.recommend.online import OnlineRecommender
    from loopline.serve.request_log import RequestLog
    from loopline.store.metadata import MetadataStore

__all__ = ["ServeState", "get_state"]


@dataclass
class ServeState:
    """The server's long-lived parts. ``experiments`` / ``request_log`` are ``None`` when
    not available (then no assignment is made and nothing is logged)."""

    config: LooplineConfig
    models: ModelHost
    recommender: OnlineRecommender | None
    experiments: ExperimentRouter | None
    request_log: RequestLog | None
    metrics: ServeMetrics
    registry: ModelRegistry | None = None
    metadata: MetadataStore | None = None
    loaded: threading.Event = field(default_factory=threading.Event)
    """Set when the background load finished (successfully or not)."""
    load_error: str | None = None
    """Why loading failed (shown by ``/health/ready``), else ``None``."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Background work (shadow scoring) still running; awaited at shutdown."""

    @property
    def ready(self) -> bool:
        """Every model (and the recommender, if configured) is loaded."""
        if not self.loaded.is_set() or self.load_error is not None:
            return False
        if not self.models.ready:
            return False
        return self.config.serve.recommender is None or self.recommender is not None


def get_state(request: Request) -> ServeState:
    """FastAPI dependency: the app's :class:`ServeState` (503 before start-up finished)."""
    state: ServeState | None = getattr(request.app.state, "loopline", None)
    if state is None:
        raise HTTPException(503, detail="server is starting")
    return state
