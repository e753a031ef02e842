"""The bare FastAPI anchor of the serving benchmark: one route that only calls predict_proba.

Run (MLflow's tracking URI in the environment, as for ``mlflow models serve``)::

    MLFLOW_TRACKING_URI=sqlite:////path/.loopline/mlflow.db \\
        .venv/bin/python benchmarks/serve_bare_app.py models:/churn@champion --port 8001

    curl -s localhost:8001/predict -d '{"tenure": 3, ...}'   # one row, a JSON object

It loads the model with ``mlflow.sklearn.load_model`` and answers ``POST /predict`` (body:
one row as a JSON object) with ``model.predict_proba(pd.DataFrame([body]))``: no
validation, no auth, no metrics, no logging; uvicorn with one worker, uvloop + httptools,
access log off. The handler is ``async`` (no thread-pool hop): the cheapest FastAPI can be.
``GET /health`` answers once the model is loaded (it is loaded before uvicorn starts).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import ORJSONResponse

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def create_app(model_uri: str) -> FastAPI:
    import mlflow.sklearn
    import pandas as pd

    model = mlflow.sklearn.load_model(model_uri)
    app = FastAPI(default_response_class=ORJSONResponse)

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await request.json()
        return {"probabilities": model.predict_proba(pd.DataFrame([body]))[0].tolist()}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_uri", help="e.g. models:/churn@champion")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.model_uri),
        host=args.host,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
