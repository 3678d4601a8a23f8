# syntax=docker/dockerfile:1.7
# One image definition for every service of the workspace; the build arguments pick the service:
#
#   docker build --build-arg PACKAGE=wa-gateway        --build-arg MODULE=wa_gateway        -t wa-gateway .
#   docker build --build-arg PACKAGE=wa-auth           --build-arg MODULE=wa_auth           -t wa-auth .
#   docker build --build-arg PACKAGE=wa-session-worker --build-arg MODULE=wa_session_worker \
#                --build-arg APT_PACKAGES=libmagic1 -t wa-session-worker .
#   docker build --build-arg PACKAGE=wa-webhooks       --build-arg MODULE=wa_webhooks       -t wa-webhooks .
#   docker build --build-arg PACKAGE=wa-stats          --build-arg MODULE=wa_stats          -t wa-stats .
#
# (docker-compose.yml does exactly this.) Dependencies come from the committed uv.lock
# (`uv sync --frozen --no-dev --package <pkg>`): only that service's dependency closure is
# installed. The image runs as an unprivileged user, contains no secret (every credential is an
# environment variable at run time), and `python -m <module> [serve|migrate]` is its command:
#   docker run wa-auth            -> serve
#   docker run wa-auth migrate    -> upgrade the store, exit

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.8

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------- build: a self-contained venv
FROM ${PYTHON_IMAGE} AS build
ARG PACKAGE
RUN test -n "${PACKAGE}" || (echo "build argument PACKAGE is required (e.g. wa-gateway)" >&2; exit 1)
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first (their layer is reused while only our code changes).
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/gateway/pyproject.toml services/gateway/pyproject.toml
COPY services/auth/pyproject.toml services/auth/pyproject.toml
COPY services/session-worker/pyproject.toml services/session-worker/pyproject.toml
COPY services/webhook-dispatcher/pyproject.toml services/webhook-dispatcher/pyproject.toml
COPY services/stats/pyproject.toml services/stats/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "${PACKAGE}"
# Then the workspace packages themselves, installed as ordinary (non-editable) wheels.
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "${PACKAGE}"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime
ARG MODULE
ARG APT_PACKAGES=""
RUN test -n "${MODULE}" || (echo "build argument MODULE is required (e.g. wa_gateway)" >&2; exit 1)
RUN if [ -n "${APT_PACKAGES}" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ${APT_PACKAGES} \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN groupadd --system --gid 10001 wa \
    && useradd --system --uid 10001 --gid wa --home-dir /app --no-create-home --shell /usr/sbin/nologin wa \
    && mkdir -p /app/data \
    && chown wa:wa /app/data
COPY --from=build /app/.venv /app/.venv
COPY docker/healthcheck.py /app/healthcheck.py
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    APP_MODULE=${MODULE}
WORKDIR /app
# SQLite stores (embedded/dev only) live here; production uses PostgreSQL.
VOLUME ["/app/data"]
USER 10001:10001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"$APP_MODULE\" \"$@\"", "--"]
CMD ["serve"]
