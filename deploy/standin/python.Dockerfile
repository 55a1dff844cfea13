# Stand-in for python:3.11-slim-bookworm, built on the debootstrapped Debian stand-in by
# deploy/standin/build.sh: Debian 12's python3 (3.11) with venv, reachable as
# /usr/local/bin/python like in the official image (the project's venv links to it).
ARG DEBIAN_IMAGE=invasive-standin/debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python3 \
    && ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
