# Image for the prediction service (`invasive-api`, the default command) and for training
# (`invasive-train`, run by the compose `train` service). One image serves CPU and GPU hosts:
# the PyPI torch wheel is the CUDA build, and on a GPU host the NVIDIA Container Toolkit mounts
# the driver into the container, so the base needs no CUDA of its own.
#
#   docker build -t invasive-species-service .
#   docker run --gpus all -p 8000:8000 -v invasive-models:/models invasive-species-service
#
# The checkpoint is never baked in: it is read from the /models volume (INVASIVE_CHECKPOINT).

# Same tag in both stages: the venv's interpreter is a link to the base image's python. Any
# Debian-based image with python3.11 at /usr/local/bin/python works (--build-arg PYTHON_IMAGE=...).
# No `# syntax=` line: BuildKit would fetch a frontend image for it, which offline builders can't.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---------------------------------------------------------------------------- requirements
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /pyproject.toml
RUN python -c "import tomllib; deps = tomllib.load(open('/pyproject.toml', 'rb'))['project']['dependencies']; open('/requirements.txt', 'w').write(chr(10).join(deps) + chr(10))"

# ---------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# torch and torchvision first, in their own layer: they are gigabytes (CUDA libraries included)
# and change only when these pins do. Keep them equal to pyproject.toml (a test checks).
# For CPU-only hosts, --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes the
# CPU wheels instead (no CUDA libraries: 3.2 GB of the CUDA image are those; see README).
ARG TORCH_INDEX_URL=
RUN python -m venv /opt/venv \
    && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple} \
        torch==2.14.1 torchvision==0.29.1

# The other runtime dependencies, as a requirements list read from pyproject.toml by a stage of
# its own: the builder copies only that list, so the layers below (and the venv copied from
# them) are rebuilt only when the runtime dependencies change, not on every code change or
# dev-dependency edit.
WORKDIR /build
COPY --from=requirements /requirements.txt ./
RUN pip install -r requirements.txt

# The project itself: a regular (non-editable) install without dependencies, into a prefix of
# its own that the runtime stage lays over the venv as a small layer. pip goes afterwards: the
# service never installs anything at run time.
COPY pyproject.toml README.md ./
COPY model/ model/
COPY training/ training/
COPY app/ app/
RUN pip install --no-deps --prefix /opt/project . \
    && pip uninstall --yes pip

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="invasive-species-service" \
      org.opencontainers.image.description="Invasive plant photo classifier: FastAPI service and training CLI" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric uid/gid, so volume ownership can be set from the host (chown 10001) and
# orchestrators can verify the container does not run as root. The mount points are created
# owned by that user: Docker gives a new, empty named volume the ownership of its mount point.
# (Not --system: system accounts are numbered below 1000, and useradd warns about 10001.)
# The base image's own pip goes too: nothing is installed at run time.
ARG APP_UID=10001
RUN groupadd --gid "${APP_UID}" invasive \
    && useradd --uid "${APP_UID}" --gid invasive --no-log-init --create-home \
        --home-dir /home/invasive --shell /usr/sbin/nologin invasive \
    && install --directory --owner invasive --group invasive /models /home/invasive/.cache \
    && (python -m pip uninstall --yes pip setuptools wheel >/dev/null 2>&1 || true)

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/project /opt/venv
# Run by the compose `model-check` service before the API starts (see the file).
COPY deploy/check_checkpoint.py /opt/invasive/check_checkpoint.py

# Configuration is by environment (INVASIVE_*; see deploy/invasive.env.example). These are the
# values that only make sense inside a container: listen on every interface, read the
# checkpoint from the mounted volume.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    INVASIVE_HOST=0.0.0.0 \
    INVASIVE_PORT=8000 \
    INVASIVE_CHECKPOINT=/models/model.safetensors

WORKDIR /home/invasive
USER ${APP_UID}:${APP_UID}
VOLUME ["/models"]
EXPOSE 8000

# Ready only once the model is loaded and warmed up. Plain python (no curl in the image); any
# error, including a 503 from /health/ready, makes python exit 1, which Docker reads as unhealthy.
# The start period covers model load and CUDA warm-up.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('INVASIVE_PORT', '8000') + '/health/ready', timeout=4)"]

# The README's console script; training uses the same image with `invasive-train`.
CMD ["invasive-api"]
