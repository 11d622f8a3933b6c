# shellcheck shell=bash
# The test cluster's node, sourced by scripts/testcluster (`up DIR --node`).
#
# What does not work on this machine, measured (2026-11, this machine kind), and what
# is done instead:
# * lowering a process's oom_score_adj is refused: every sandbox failed with runc's
#   "can't get final child's PID from pipe: EOF" until containerd got
#   restrict_oom_score_adj = true;
# * cgroup v1 only (the unified hierarchy has no controllers) and no systemd: the
#   kubelet uses the cgroupfs driver with failCgroupV1: false, under its own
#   cgroupRoot (/airtrust-<dir>) so `down` removes exactly what it made;
# * "nodeIP can't be loopback": the node reports the machine's address, which the
#   tests never contact (`kubectl logs/exec` go through it); pod logs are read from
#   DIR/node/pod-logs instead;
# * no kube-proxy and no pod network: pods use hostNetwork and reach the apiserver at
#   127.0.0.1 through KUBERNETES_SERVICE_HOST/PORT set on their containers (explicit
#   env wins over the ClusterIP the kubelet injects, which nothing routes here).
# With the binaries cached the node is Ready about 30 s after `up --node` starts.

node_up() {
  local d=$1 n="$1/node" pki="$1/pki" bin py="$here/.venv/bin/python"
  bin=$("$here/scripts/build-testbins" kubelet kube-scheduler kube-controller-manager crane kubectl) \
    || die "building the node binaries failed"
  local tool
  for tool in containerd containerd-shim-runc-v2 runc docker-registry gcc; do
    command -v "$tool" >/dev/null \
      || die "$tool is not installed (apt-get install containerd runc docker-registry gcc)"
  done
  [ -x "$py" ] || die "$py is missing; run scripts/test once (it makes the venv)"
  mkdir -p "$n"
  # 1. A registry the node trusts: TLS from a CA airtrust made.
  if [ ! -f "$n/registry-ca/ca.crt" ]; then
    "$py" -m airtrust ca create --out "$n/registry-ca" --name "testcluster registry CA" \
      -o json >/dev/null || die "airtrust ca create failed"
    "$py" -m airtrust cert issue --ca-dir "$n/registry-ca" --domain localhost --ip 127.0.0.1 \
      --out "$n/registry-tls" -o json >/dev/null || die "airtrust cert issue failed"
  fi
  local reg_port registry
  reg_port=$(free_port)
  registry="127.0.0.1:$reg_port"
  {
    echo "version: 0.1"
    echo "log: {level: warn, accesslog: {disabled: true}}"
    echo "storage: {filesystem: {rootdirectory: $n/registry-data}, delete: {enabled: true}}"
    echo "http: {addr: \"$registry\", tls: {certificate: $n/registry-tls/tls.crt, key: $n/registry-tls/tls.key}}"
  } > "$n/registry.yml"
  docker-registry serve "$n/registry.yml" > "$n/registry.log" 2>&1 &
  echo $! > "$n/registry.pid"
  echo "$registry" > "$d/registry"
  cp "$n/registry-ca/ca.crt" "$d/registry-ca.crt"
  wait_url "https://$registry/v2/" "$d/registry-ca.crt" "$n/registry.pid" "registry ($n/registry.log)"
  # 2. The pause image every sandbox starts from, built from the Kubernetes module.
  local pause="$cache/bin/pause-$KUBE_VERSION"
  if [ ! -x "$pause" ]; then
    local src
    src=$(cd "$cache" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') \
      || die "the k8s.io/kubernetes module is not downloadable"
    gcc -Os -static -o "$pause.tmp.$$" "$src/build/pause/linux/pause.c" \
      || die "building pause from $src failed"
    mv "$pause.tmp.$$" "$pause"
  fi
  mkdir -p "$n/pause-root"
  cp "$pause" "$n/pause-root/pause"
  tar -C "$n/pause-root" --owner=0 --group=0 -cf "$n/pause.tar" pause
  SSL_CERT_FILE="$d/registry-ca.crt" "$bin/crane" append -f "$n/pause.tar" \
    -t "$registry/pause:3.10" --oci-empty-base >/dev/null 2>"$n/crane.log" \
    || die "pushing the pause image failed ($n/crane.log)"
  SSL_CERT_FILE="$d/registry-ca.crt" "$bin/crane" mutate "$registry/pause:3.10" \
    -t "$registry/pause:3.10" --entrypoint /pause --set-platform linux/amd64 \
    >/dev/null 2>>"$n/crane.log" || die "pushing the pause image failed ($n/crane.log)"
  # 3. containerd, everything under DIR/node; the registry trusted through certs.d.
  mkdir -p "$n/certs.d/$registry" "$n/cni" "$n/containerd"
  {
    echo "server = \"https://$registry\""
    echo
    echo "[host.\"https://$registry\"]"
    echo "  capabilities = [\"pull\", \"resolve\"]"
    echo "  ca = \"$d/registry-ca.crt\""
  } > "$n/certs.d/$registry/hosts.toml"
  echo '{"cniVersion": "0.4.0", "name": "loopback", "plugins": [{"type": "loopback"}]}' \
    > "$n/cni/10-loopback.conflist"
  {
    echo 'version = 2'
    echo "root = \"$n/containerd/root\""
    echo "state = \"$n/containerd/state\""
    echo '[grpc]'
    echo "  address = \"$n/containerd.sock\""
    echo '[ttrpc]'
    echo "  address = \"$n/containerd.sock.ttrpc\""
    echo '[plugins."io.containerd.internal.v1.opt"]'
    echo "  path = \"$n/containerd/opt\""
    echo '[plugins."io.containerd.grpc.v1.cri"]'
    echo "  sandbox_image = \"$registry/pause:3.10\""
    echo '  restrict_oom_score_adj = true'
    echo '  disable_apparmor = true'
    echo '  [plugins."io.containerd.grpc.v1.cri".containerd]'
    echo '    snapshotter = "overlayfs"'
    echo '    default_runtime_name = "runc"'
    echo '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
    echo '      runtime_type = "io.containerd.runc.v2"'
    echo '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]'
    echo '        SystemdCgroup = false'
    echo '  [plugins."io.containerd.grpc.v1.cri".cni]'
    echo '    bin_dir = "/usr/lib/cni"'
    echo "    conf_dir = \"$n/cni\""
    echo '  [plugins."io.containerd.grpc.v1.cri".registry]'
    echo "    config_path = \"$n/certs.d\""
  } > "$n/containerd.toml"
  start_containerd "$d"
  # 4. Controllers and scheduler (with the test cluster's admin credentials).
  "$bin/kube-controller-manager" --kubeconfig "$d/kubeconfig" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --controllers '*' --v=0 > "$n/controller-manager.log" 2>&1 &
  echo $! > "$n/controller-manager.pid"
  "$bin/kube-scheduler" --kubeconfig "$d/kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 --v=0 > "$n/scheduler.log" 2>&1 &
  echo $! > "$n/scheduler.pid"
  # 5. The kubelet, in its own cgroup subtree.
  local id ctl
  id="airtrust-$(basename "$d" | tr -c 'a-zA-Z0-9\n' '-')-$$"
  echo "/$id" > "$n/cgroup-root"
  for ctl in /sys/fs/cgroup/*/; do
    case "$ctl" in */unified/) continue ;; esac
    mkdir -p "$ctl$id" 2>/dev/null || true
  done
  {
    echo 'apiVersion: kubelet.config.k8s.io/v1beta1'
    echo 'kind: KubeletConfiguration'
    echo 'cgroupDriver: cgroupfs'
    echo "cgroupRoot: /$id"
    echo 'failCgroupV1: false'
    echo 'failSwapOn: false'
    echo "containerRuntimeEndpoint: unix://$n/containerd.sock"
    echo 'address: 127.0.0.1'
    echo "port: $(free_port)"
    echo 'healthzBindAddress: 127.0.0.1'
    echo "healthzPort: $(free_port)"
    echo 'readOnlyPort: 0'
    echo "podLogsDir: $n/pod-logs"
    echo 'authentication:'
    echo '  anonymous: {enabled: false}'
    echo '  webhook: {enabled: false}'
    echo "  x509: {clientCAFile: $pki/ca.crt}"
    echo 'authorization: {mode: AlwaysAllow}'
    echo 'evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}'
    echo 'imageGCHighThresholdPercent: 100'
    echo 'imageGCLowThresholdPercent: 99'
    echo 'enforceNodeAllocatable: []'
    echo 'serializeImagePulls: false'
    echo 'resolvConf: ""'
    echo 'syncFrequency: 5s'
    echo 'fileCheckFrequency: 5s'
    echo 'nodeStatusUpdateFrequency: 5s'
  } > "$n/kubelet.yaml"
  start_kubelet "$d"
  wait_node_ready "$d"
}

start_containerd() {
  local n="$1/node" i
  rm -f "$n/containerd.sock"
  containerd --config "$n/containerd.toml" >> "$n/containerd.log" 2>&1 &
  echo $! > "$n/containerd.pid"
  for i in $(seq 1 300); do
    [ -S "$n/containerd.sock" ] && return 0
    running "$(cat "$n/containerd.pid")" || die "containerd exited; see $n/containerd.log"
    sleep 0.1
  done
  die "containerd did not start; see $n/containerd.log"
}

start_kubelet() {
  local d=$1 n="$1/node" bin
  bin=$("$here/scripts/build-testbins" kubelet) || die "building kubelet failed"
  "$bin/kubelet" --config "$n/kubelet.yaml" --kubeconfig "$d/kubeconfig" \
    --root-dir "$n/kubelet" --hostname-override airtrust-node --v=1 >> "$n/kubelet.log" 2>&1 &
  echo $! > "$n/kubelet.pid"
}

wait_url() {  # url ca pidfile what
  local i
  for i in $(seq 1 300); do
    curl -sf --cacert "$2" "$1" >/dev/null 2>&1 && return 0
    running "$(cat "$3")" || die "$4 exited"
    sleep 0.1
  done
  die "$4 not answering"
}

wait_node_ready() {
  local d=$1 n="$1/node" i kubectl port
  kubectl="$("$here/scripts/build-testbins" kubectl)/kubectl"
  # The kubelet itself first (the node's Ready condition may be an old one).
  port=$(awk '$1 == "healthzPort:" {print $2}' "$n/kubelet.yaml")
  for i in $(seq 1 900); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    running "$(cat "$n/kubelet.pid")" || die "kubelet exited; see $n/kubelet.log"
    sleep 0.2
  done
  for i in $(seq 1 900); do
    if "$kubectl" --kubeconfig "$d/kubeconfig" get node airtrust-node \
         -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null \
         | grep -qx True; then
      return 0
    fi
    running "$(cat "$n/kubelet.pid")" || die "kubelet exited; see $n/kubelet.log"
    running "$(cat "$n/containerd.pid")" || die "containerd exited; see $n/containerd.log"
    sleep 0.2
  done
  die "node not Ready after 180 s; see $n/kubelet.log and $n/containerd.log"
}

node_down() {
  local d=$1 n="$1/node" pid m ctl root
  [ -d "$n" ] || return 0
  stop_pid "$n/kubelet.pid"
  stop_pid "$n/scheduler.pid"
  stop_pid "$n/controller-manager.pid"
  # The containers' shims (each started for this containerd's socket) and what they run.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $n/containerd.sock" || true); do
    pkill -9 -P "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
  done
  stop_pid "$n/containerd.pid"
  stop_pid "$n/registry.pid"
  # Processes still in the kubelet's cgroups (containers whose shim went first).
  if [ -f "$n/cgroup-root" ]; then
    root=$(cat "$n/cgroup-root")
    for ctl in /sys/fs/cgroup/*/; do
      [ -d "$ctl${root#/}" ] || continue
      find "$ctl${root#/}" -name cgroup.procs -exec cat {} \; 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    done
  fi
  # Mounts under the node's folder (kubelet bind-mounts, overlay rootfs, shm), deepest first.
  for m in $(awk -v p="$n/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # The cgroups the kubelet made, deepest first.
  if [ -f "$n/cgroup-root" ]; then
    root=$(cat "$n/cgroup-root")
    for ctl in /sys/fs/cgroup/*/; do
      [ -d "$ctl${root#/}" ] || continue
      for _ in 1 2 3 4 5; do
        find "$ctl${root#/}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d "$ctl${root#/}" ] || break
        sleep 0.2
      done
    done
  fi
}
