# Every service image, one recipe: docker build --build-arg SERVICE=<crawler|preprocessor|embedding|trainer|predictor> .
# Built from the repository root (skaffold.yaml does it for every image). Base images are pinned by tag and digest
# (DEVELOPERS.md says how to move them). The CUDA trainer (services/trainer/Dockerfile.gpu) and TorchServe
# (deploy/torchserve/Dockerfile) really differ and have their own.
#
# An image installs its service and what that service's pyproject asks for: the ground floor always, the model kit
# (and with it torch) only for the embedding service, the trainer and the predictor.

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build
ARG SERVICE
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY modelkit/ modelkit/
COPY services/ services/
# The local rooms as wheels, each pinned to its file by a constraint: pip takes `tubelens` and `tubelens-modelkit`
# from here, never from an index, and installs the model kit only where the service's own requirements reach it.
RUN test -n "$SERVICE" && test -f "services/$SERVICE/pyproject.toml" \
    && pip wheel --no-deps --wheel-dir /wheels . ./modelkit "./services/$SERVICE" \
    && for wheel in /wheels/*.whl; do \
         echo "$(basename "$wheel" | cut -d- -f1 | tr _ -) @ file://$wheel"; \
       done > /wheels/local.txt
# torch from the PyTorch CPU index: the model kit pins torch==2.13.0, which PyPI serves as a multi-GB CUDA build,
# and the CPU index's 2.13.0+cpu satisfies that pin and ranks above it. Services without the model kit never ask.
RUN pip install --constraint /wheels/local.txt --extra-index-url https://download.pytorch.org/whl/cpu "tubelens-$SERVICE"
# Images with the model kit carry the embedding backbone exported to ONNX and checked against torch, at the path the
# runtime looks for by default (.tubelens/models/ under the working directory): nothing is exported or downloaded
# when a pod starts.
WORKDIR /opt/tubelens
RUN if python -c "import tubelens.modelkit.export" 2>/dev/null; then python -m tubelens.modelkit.export; fi
# The entry point: `tubelens <service> run`, fixed at build time.
RUN printf '#!/bin/sh\nexec /opt/venv/bin/tubelens %s run "$@"\n' "$SERVICE" > /opt/venv/bin/tubelens-service \
    && chmod 755 /opt/venv/bin/tubelens-service

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
RUN groupadd --system --gid 10001 tubelens \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tubelens
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tubelens /opt/tubelens
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/tubelens
USER 10001:10001
ENTRYPOINT ["tubelens-service"]
