# statetune images. Two targets:
#   docker build --target cpu  -t statetune:cpu  .    Debian 12, Debian's CPU LibTorch
#   docker build --target cuda -t statetune:cuda .    Debian 12 + NVIDIA's CUDA toolkit + a CUDA LibTorch
# (or `buildah bud --format docker --target cpu ...`: the OCI format has no HEALTHCHECK). Both hold
# statetune-serve, statetune-train, the statetune client and statetune-engine, and run as the
# non-root user statetune (uid 10001). The default command serves; run statetune-train by naming it:
#   docker run -v $PWD/m:/model -v $PWD/tenants.json:/etc/statetune/tenants.json:ro -p 50051:50051 \
#     statetune:cpu statetune-serve --model /model --listen 0.0.0.0:50051 --metrics-listen 0.0.0.0:9090
# The model: models/default/ of the checkout is copied to /usr/local/share/statetune/models/default
# when it exists, where the binaries look when no --model / STATETUNE_MODEL is given (see
# server/engine/model/default_model.h); without it, give --model / STATETUNE_MODEL a mounted folder.
# Data sets for `statetune-engine convert-dataset` / `eval` / `train --dataset` are read from
# STATETUNE_DATASETS_DIR=/var/lib/statetune/datasets: mount them there.
#
# Build stages have the compilers and -dev packages; the runtime stages (runtime, then cpu / cuda) start
# again from plain Debian and get, from the build stage, the stripped binaries and exactly the shared
# libraries they load (scripts/collect-runtime-libs.sh: the ldd tree, less what the base image has;
# /usr/local/lib/statetune/PACKAGES names their Debian packages and versions). Installing Debian's
# libtorch1.13 package instead would bring OpenCV, GDAL, Qt and Perl files nothing loads (the image
# was 1,047 MB that way). The package list is scripts/setup.sh's, the one CI builds with; CI also
# builds the cpu target and runs it (tests/deploy/image_smoke_test.sh, from .ci/run).
# The CPU kernels pick their instruction set (x86-64-v2, v3 or v4) at start-up, so the binaries do not
# depend on the building machine's CPU (kernels/cpu_level.h).

ARG DEBIAN_IMAGE=debian:12

# ---- The base image's own packages: the runtime stages have them, so their libraries are not copied --
FROM ${DEBIAN_IMAGE} AS base-packages
RUN dpkg-query -W -f='${Package}\n' >/base-packages

# ---- Debian build packages (setup.sh's list), no build -------------------------------------------
FROM ${DEBIAN_IMAGE} AS deps
# STATETUNE_DEPS_ONLY: install the packages and stop; STATETUNE_NO_TEST_TOOLS: leave out what only
# the test suite needs (prometheus, kubectl, npm and the manifest validator).
# setup.sh is copied, not bind-mounted: buildah keys a RUN's layer cache on the instruction's text,
# not on a bind-mounted file, so a changed package list would reuse a stale layer (it did: libpqxx
# missing); a COPY layer is keyed on the file's content. This stage never ships.
COPY scripts/setup.sh /tmp/statetune/scripts/setup.sh
RUN STATETUNE_DEPS_ONLY=1 STATETUNE_NO_TEST_TOOLS=1 /tmp/statetune/scripts/setup.sh \
    && rm -rf /var/lib/apt/lists/*

# ---- CPU build -----------------------------------------------------------------------------------
FROM deps AS build
ARG STATETUNE_JOBS=
WORKDIR /src
COPY --from=base-packages /base-packages /base-packages
COPY . /src
# The ccache cache mount lets a rebuild after a source change (CI on the same machine) recompile only
# what changed; it is not part of the image.
RUN --mount=type=cache,target=/root/.cache/ccache \
    STATETUNE_SKIP_APT=1 STATETUNE_NO_TEST_TOOLS=1 \
    STATETUNE_CMAKE_ARGS="-DSTATETUNE_BUILD_TESTS=OFF -DSTATETUNE_CUDA=OFF" \
    scripts/setup.sh /build \
    && mkdir -p /out/bin /out/models \
    && cp /build/server/serving/statetune-serve /build/server/training/statetune-train \
          /build/client/statetune /build/server/engine/tools/statetune-engine /out/bin/ \
    && strip --strip-unneeded /out/bin/* \
    && BASE_PACKAGES=/base-packages scripts/collect-runtime-libs.sh /out/lib /out/bin/* \
    && if [ -d models/default ]; then cp -r models/default /out/models/default; fi

# ---- What both images share: user, folders, settings, health check; no statetune packages yet -----
FROM ${DEBIAN_IMAGE} AS runtime
RUN groupadd --gid 10001 statetune \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/statetune \
               --shell /usr/sbin/nologin statetune \
    && mkdir -p /var/lib/statetune/adapters /var/lib/statetune/train /var/lib/statetune/datasets \
                /etc/statetune \
    && chown -R statetune:statetune /var/lib/statetune \
    && echo /usr/local/lib/statetune >/etc/ld.so.conf.d/statetune.conf
# Per-binary settings only (STATETUNE_LISTEN would be read by both services, so the listen addresses
# are flags in CMD below, and Kubernetes sets them through its ConfigMaps).
ENV STATETUNE_TENANTS_FILE=/etc/statetune/tenants.json \
    STATETUNE_ADAPTERS_DIR=/var/lib/statetune/adapters \
    STATETUNE_DATA_DIR=/var/lib/statetune/train \
    STATETUNE_DATASETS_DIR=/var/lib/statetune/datasets \
    STATETUNE_HEALTH_ADDR=127.0.0.1:50051
WORKDIR /var/lib/statetune
EXPOSE 50051 9090 50061 9091
# gRPC health through the client: NOT_SERVING (exit 1) while the model loads and while draining.
# For a container running statetune-train set STATETUNE_HEALTH_ADDR=127.0.0.1:50061.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD statetune health --addr "$STATETUNE_HEALTH_ADDR" --timeout 3 || exit 1
CMD ["statetune-serve", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9090"]

# ---- CPU image: the loaded libraries (Debian's CPU LibTorch among them), the binaries, the model ---
FROM runtime AS cpu
COPY --from=build /out/lib/ /usr/local/lib/statetune/
RUN ldconfig
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build /out/models/ /usr/local/share/statetune/models/
USER 10001:10001

# ---- CUDA toolkit + CUDA LibTorch on top of the build packages (cannot be built without them) -----
# Debian's LibTorch is CPU-only, so this stage adds NVIDIA's CUDA repository for Debian 12 and a
# cxx11-ABI CUDA LibTorch, which CMake prefers through CMAKE_PREFIX_PATH. The versions are build
# arguments; match LIBTORCH_URL's CUDA version to CUDA_TOOLKIT.
FROM deps AS cuda-deps
ARG CUDA_KEYRING_URL=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb
ARG CUDA_TOOLKIT=cuda-toolkit-12-4
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu124/libtorch-cxx11-abi-shared-with-deps-2.4.1%2Bcu124.zip
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wget unzip \
    && wget -q -O /tmp/cuda-keyring.deb "$CUDA_KEYRING_URL" && dpkg -i /tmp/cuda-keyring.deb \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$CUDA_TOOLKIT" \
    && wget -q -O /tmp/libtorch.zip "$LIBTORCH_URL" && unzip -q /tmp/libtorch.zip -d /opt \
    && rm -rf /tmp/*.deb /tmp/libtorch.zip /var/lib/apt/lists/*
ENV PATH=/usr/local/cuda/bin:$PATH \
    LD_LIBRARY_PATH=/opt/libtorch/lib

FROM cuda-deps AS cuda-build
ARG STATETUNE_JOBS=
# Compute capabilities to compile the kernels for (80: A100, 89: L4/L40, 90: H100/H200).
ARG CUDA_ARCHITECTURES=80;89;90
WORKDIR /src
COPY --from=base-packages /base-packages /base-packages
COPY . /src
RUN --mount=type=cache,target=/root/.cache/ccache \
    STATETUNE_SKIP_APT=1 STATETUNE_NO_TEST_TOOLS=1 \
    STATETUNE_CMAKE_ARGS="-DSTATETUNE_BUILD_TESTS=OFF -DCMAKE_PREFIX_PATH=/opt/libtorch -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
    scripts/setup.sh /build \
    && mkdir -p /out/bin /out/models \
    && cp /build/server/serving/statetune-serve /build/server/training/statetune-train \
          /build/client/statetune /build/server/engine/tools/statetune-engine /out/bin/ \
    && strip --strip-unneeded /out/bin/* \
    && BASE_PACKAGES=/base-packages SKIP_PREFIX=/opt/libtorch/ ALLOW_MISSING='^libcuda\.so' \
       LD_LIBRARY_PATH=/opt/libtorch/lib:/usr/local/cuda/lib64 \
       scripts/collect-runtime-libs.sh /out/lib /out/bin/* \
    && if [ -d models/default ]; then cp -r models/default /out/models/default; fi

# ---- CUDA image: the same layout as cpu, plus the CUDA LibTorch's lib/ whole (it bundles cuBLAS, cuDNN
# and their own renamed CUDA runtime, "with-deps", and cuDNN dlopens parts of itself, which ldd cannot
# see). Our kernels' libcudart.so.12 comes with the collected libraries; the GPU driver (libcuda.so.1)
# comes from the host (NVIDIA Container Toolkit). No compiler, toolkit or header ships.
FROM runtime AS cuda
COPY --from=cuda-build /opt/libtorch/lib/ /opt/libtorch/lib/
COPY --from=cuda-build /out/lib/ /usr/local/lib/statetune/
RUN ldconfig
COPY --from=cuda-build /out/bin/ /usr/local/bin/
COPY --from=cuda-build /out/models/ /usr/local/share/statetune/models/
ENV LD_LIBRARY_PATH=/opt/libtorch/lib \
    STATETUNE_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
