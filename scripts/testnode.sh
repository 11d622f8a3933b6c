# shellcheck shell=bash
# The test cluster's node, sourced by scripts/testcluster (`up DIR --node`).
#
# The whole cluster runs in a network namespace that `up` creates (DIR/netns) and
# `down` deletes: inside it a veth pair holds the node address ($NODE_IP, not
# loopback, so the apiserver reaches the kubelet for `kubectl logs/exec/port-forward`),
# the CNI bridge + host-local plugins give pods addresses in $POD_CIDR on a bridge
# (hairpin on), and kube-proxy (iptables mode, built from the same Kubernetes module)
# makes Service VIPs in $SERVICE_CIDR route. The namespace has no link to the host and
# no default route, so nothing in it can reach the host's interfaces or beyond. The
# test process stays on the host: the apiserver and the registry are relayed out to
# the same ports on the host's 127.0.0.1 by scripts/nsrelay (a relay, not a route, so
# the namespace stays closed), and `testcluster expose` relays a server a test starts
# on the host into the namespace at $NODE_IP for pods. A relay rather than the suite
# entering the namespace: every client a test runs (kubectl, skopeo, curl, helm, Java)
# then runs as users run it, on the host.
#
# What does not work on this machine, measured (2026-11, this machine kind), and what
# is done instead:
# * lowering a process's oom_score_adj is refused: every sandbox failed with runc's
#   "can't get final child's PID from pipe: EOF" until containerd got
#   restrict_oom_score_adj = true;
# * cgroup v1 only (the unified hierarchy has no controllers) and no systemd: the
#   kubelet uses the cgroupfs driver with failCgroupV1: false, under its own
#   cgroupRoot (/airtrust-<dir>) so `down` removes exactly what it made;
# * kube-proxy may not set conntrack sysctls here: its flags leave them as they are
#   (--conntrack-max-per-core=0 and the timeouts 0), and no route_localnet
#   (--iptables-localhost-nodeports=false); --masquerade-all, because without
#   br_netfilter a reply from a pod on the same bridge would skip the un-DNAT.
# No CoreDNS: the apiserver resolves a webhook Service itself and the kubelet injects
# KUBERNETES_SERVICE_HOST; pods that reach a test's server by name get hostAliases.

NODE_IP=10.200.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24
KUBERNETES_VIP=10.0.0.1

# NSX: the prefix that runs a command in DIR's network namespace (empty without one).
ns_prefix() {  # dir
  NSX=()
  [ -f "$1/netns" ] && NSX=(nsenter "--net=/run/netns/$(cat "$1/netns")")
  return 0
}

netns_up() {  # dir
  local d=$1 name
  command -v ip >/dev/null || die "ip is not installed (apt-get install iproute2)"
  name="airtrust-$(printf %s "$d" | sha1sum | cut -c1-12)"
  ip netns del "$name" 2>/dev/null || true  # a leftover of a run that was killed
  ip netns add "$name" || die "cannot create the network namespace $name (root needed)"
  echo "$name" > "$d/netns"
  echo "$NODE_IP" > "$d/node-ip"
  ip -n "$name" link set lo up
  # The node's own interface: a veth pair with both ends inside (this kernel has no
  # dummy links), the node address on one end.
  ip -n "$name" link add node0 type veth peer name node0-peer
  ip -n "$name" addr add "$NODE_IP/32" dev node0
  ip -n "$name" link set node0-peer up
  ip -n "$name" link set node0 up
  # Local traffic to a VIP needs a route before kube-proxy's OUTPUT DNAT applies.
  ip -n "$name" route add "$SERVICE_CIDR" dev node0
  nsenter "--net=/run/netns/$name" sysctl -qw net.ipv4.ip_forward=1 \
    || die "cannot enable forwarding in $name"
}

netns_down() {  # dir
  [ -f "$1/netns" ] || return 0
  local name pid
  name=$(cat "$1/netns")
  # Relays `expose` started and a test never stopped: a listening socket of theirs would
  # keep the namespace alive after its name is gone. Each one's command line names the
  # namespace (a pid reused since is left alone).
  if [ -f "$1/relay-expose.pids" ]; then
    for pid in $(cat "$1/relay-expose.pids"); do
      tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -q "nsrelay .*/run/netns/$name " \
        || continue
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do running "$pid" || break; sleep 0.05; done
    done
    rm -f "$1/relay-expose.pids"
  fi
  ip netns del "$name" 2>/dev/null || true
  rm -f "$1/netns"
}

# The host's 127.0.0.1:PORT relayed to 127.0.0.1:PORT inside the namespace.
relay_out() {  # dir what port
  local d=$1 port=$3
  python3 "$here/scripts/nsrelay" --connect-netns "/run/netns/$(cat "$d/netns")" \
    "127.0.0.1:$port=127.0.0.1:$port" >> "$d/relay-$2.log" 2>&1 &
  echo $! > "$d/relay-$2.pid"
}

expose() {  # dir port...
  local d=$1 p pairs=()
  shift
  [ -f "$d/netns" ] || die "$d has no node network; run 'testcluster up $d --node' first"
  for p in "$@"; do pairs+=("$NODE_IP:$p=127.0.0.1:$p"); done
  python3 "$here/scripts/nsrelay" --listen-netns "/run/netns/$(cat "$d/netns")" \
    "${pairs[@]}" >> "$d/relay-expose.log" 2>&1 &
  local pid=$!
  echo "$pid" >> "$d/relay-expose.pids"  # for `down`, should the caller not stop it
  for p in "$@"; do
    for _ in $(seq 1 100); do
      nsenter "--net=/run/netns/$(cat "$d/netns")" ss -Hltn "sport = :$p" | grep -q . && break
      running "$pid" || die "the relay exited; see $d/relay-expose.log"
      sleep 0.05
    done
  done
  echo "$pid"
}

node_up() {
  local d=$1 n="$1/node" pki="$1/pki" bin py="$here/.venv/bin/python"
  bin=$("$here/scripts/build-testbins" kubelet kube-scheduler kube-controller-manager kube-proxy crane kubectl) \
    || die "building the node binaries failed"
  local tool
  for tool in containerd containerd-shim-runc-v2 runc docker-registry gcc iptables; do
    command -v "$tool" >/dev/null \
      || die "$tool is not installed (apt-get install containerd runc docker-registry gcc iptables)"
  done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] \
    || die "the CNI plugins are not installed (apt-get install containernetworking-plugins)"
  ns_prefix "$d"
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
  "${NSX[@]}" docker-registry serve "$n/registry.yml" > "$n/registry.log" 2>&1 &
  echo $! > "$n/registry.pid"
  relay_out "$d" registry "$reg_port"
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
  # The pod network: one bridge, addresses from host-local (its state under DIR, so
  # two clusters never share a lease file), every route through the bridge.
  cat > "$n/cni/10-pods.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "airtrust-pods", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$n/cni-ipam",
            "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
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
    echo '  netns_mounts_under_state_dir = true'  # pods' namespaces under DIR, for down
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
  "${NSX[@]}" "$bin/kube-controller-manager" --kubeconfig "$d/kubeconfig" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --controllers '*' --v=0 > "$n/controller-manager.log" 2>&1 &
  echo $! > "$n/controller-manager.pid"
  "${NSX[@]}" "$bin/kube-scheduler" --kubeconfig "$d/kubeconfig" --leader-elect=false \
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
    echo "address: $NODE_IP"
    echo 'port: 10250'
    echo 'healthzBindAddress: 127.0.0.1'
    echo 'healthzPort: 10248'
    echo "podCIDR: $POD_CIDR"
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
  # 6. kube-proxy: Services route inside the namespace.
  "${NSX[@]}" "$bin/kube-proxy" --kubeconfig "$d/kubeconfig" --hostname-override airtrust-node \
    --proxy-mode iptables --cluster-cidr "$POD_CIDR" --masquerade-all \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 \
    --conntrack-tcp-timeout-close-wait 0 --iptables-localhost-nodeports=false \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
    --v=0 > "$n/kube-proxy.log" 2>&1 &
  echo $! > "$n/kube-proxy.pid"
  wait_node_ready "$d"
}

start_containerd() {
  local n="$1/node" i
  rm -f "$n/containerd.sock"
  ns_prefix "$1"
  "${NSX[@]}" containerd --config "$n/containerd.toml" >> "$n/containerd.log" 2>&1 &
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
  ns_prefix "$d"
  "${NSX[@]}" "$bin/kubelet" --config "$n/kubelet.yaml" --kubeconfig "$d/kubeconfig" \
    --root-dir "$n/kubelet" --hostname-override airtrust-node --node-ip "$NODE_IP" \
    --v=1 >> "$n/kubelet.log" 2>&1 &
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
  ns_prefix "$d"
  for i in $(seq 1 900); do
    "${NSX[@]}" curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
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
  stop_pid "$n/kube-proxy.pid"
  stop_pid "$n/scheduler.pid"
  stop_pid "$n/controller-manager.pid"
  # The containers' shims (each started for this containerd's socket) and what they run.
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $n/containerd.sock" || true); do
    pkill -9 -P "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
  done
  stop_pid "$n/containerd.pid"
  stop_pid "$n/registry.pid"
  stop_pid "$1/relay-registry.pid"
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
