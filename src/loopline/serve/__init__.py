"""Online serving: ``loopline serve`` (predictions, recommendations, A/B tests, feedback).

:func:`create_app` builds the FastAPI app of a project's ``serve:`` section; uvicorn runs it
(``loopline serve``). See docs/serving.md.
"""

from loopline.serve.app import create_app

__all__ = ["create_app"]
