# Every service image, one recipe: docker build --build-arg SERVICE=<crawler|preprocessor|embedding|trainer|predictor> .
# Built from the repository root (skaffold.yaml does it for every image). Base images are pinned by tag and digest
# (DEVELOPERS.md says how to move them). The CUDA trainer (services/trainer/Dockerfile.gpu) and TorchServe
# (deploy/torchserve/Dockerfile) really differ and have their own.
#
# An image installs its service and what that service's pyproject asks for: the ground floor always, the model kit
# (and with it torch) only for the embedding service, the trainer and the predictor.

# The same recipe builds both ways: by default from the pinned upstream base and the production indexes; on a machine
# that reaches no registry (`make images`), from a Debian base made by debootstrap (--build-arg BASE=tubelens-base:
# bookworm) and a local wheelhouse mounted at /wheelhouse (--build-arg PIP_NO_INDEX=1 --build-arg
# PIP_FIND_LINKS=/wheelhouse). Both bases have python3.11; Debian's has no ensurepip, so pip then comes from the
# wheelhouse.
ARG BASE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${BASE} AS build
ARG SERVICE
ARG PIP_NO_INDEX=0
ARG PIP_FIND_LINKS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INDEX=$PIP_NO_INDEX PIP_FIND_LINKS=$PIP_FIND_LINKS
RUN python3.11 -m venv /opt/venv 2>/dev/null \
    || { python3.11 -m venv --clear --without-pip /opt/venv \
         && pip_wheel=$(ls "$PIP_FIND_LINKS"/pip-*.whl | head -1) \
         && /opt/venv/bin/python "$pip_wheel/pip" install --quiet "$pip_wheel"; }
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

FROM ${BASE}
RUN groupadd --system --gid 10001 tubelens \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tubelens
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/tubelens /opt/tubelens
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /opt/tubelens
USER 10001:10001
ENTRYPOINT ["tubelens-service"]
