# Runs inside the QEMU guest as root; tests/test_links_qemu.py prepends PY=, OUT= and the
# MAC addresses (AER_MAC, SLOW_MAC, RDMA_MAC) of the NICs it attached. Everything it
# learns goes to $OUT; the test asserts outside and talks to QEMU's monitor in between,
# through two files: the guest writes ready-for-faults, the host faults-injected.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ip link set lo up
cd /tmp
modprobe virtio_net; modprobe e1000e; modprobe crc32_generic; modprobe rdma_rxe
for _ in $(seq 50); do [ "$(ls /sys/class/net | grep -c '^eth')" -ge 3 ] && break; sleep 0.2; done
by_mac() { for i in /sys/class/net/*; do [ "$(cat "$i/address")" = "$1" ] && basename "$i"; done; }
aer_if=$(by_mac "$AER_MAC"); slow_if=$(by_mac "$SLOW_MAC"); rdma_if=$(by_mac "$RDMA_MAC")
for i in $aer_if $slow_if $rdma_if; do ip link set "$i" up; done
rdma link add rxe0 type rxe netdev "$rdma_if" >"$OUT/rdma-link.log" 2>&1
echo "$aer_if $slow_if $rdma_if" >"$OUT/interfaces.txt"
for i in $aer_if $slow_if $rdma_if; do
    d=$(readlink -f "/sys/class/net/$i/device")
    case $(basename "$d") in virtio*) d=$(dirname "$d") ;; esac
    echo "$i $(basename "$d") $(basename "$(dirname "$d")")"
done >"$OUT/functions.txt"
ls /sys/class/nvme >"$OUT/controllers.txt"
for _ in $(seq 50); do grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state 2>/dev/null && break; sleep 0.2; done

# The kernel's own files, for the test to hold the exposition against.
snapshot() {
    for d in /sys/bus/pci/devices/*; do
        for f in current_link_speed current_link_width max_link_speed max_link_width \
            aer_dev_correctable aer_dev_nonfatal aer_dev_fatal aer_rootport_total_err_cor \
            aer_rootport_total_err_nonfatal aer_rootport_total_err_fatal; do
            [ -e "$d/$f" ] && echo "$(basename "$d") $f $(tr '\n' ' ' <"$d/$f")"
        done
    done
    for i in $aer_if $slow_if $rdma_if; do
        for f in carrier speed operstate carrier_changes flags; do
            echo "$i $f $(cat "/sys/class/net/$i/$f" 2>&1)"
        done
    done
    for f in state phys_state rate link_layer hw_counters/link_downed; do
        echo "rxe0/1 $f $(cat "/sys/class/infiniband/rxe0/ports/1/$f" 2>&1)"
    done
}

"$PY" -m nodeslo serve --web.listen-address=127.0.0.1:0 --collector.disable-defaults \
    --collector.pcie --collector.network --collector.inventory --no-probe.storage \
    --no-probe.wakeup --log.format=json >/dev/null 2>"$OUT/serve.log" &
daemon=$!
port=""
for _ in $(seq 3000); do
    port=$(sed -n 's/.*"msg": "listening".*"address": "127.0.0.1:\([0-9]*\)".*/\1/p' "$OUT/serve.log")
    [ -n "$port" ] && break
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.1
done
scrape() { busybox wget -q -O - "http://127.0.0.1:$port/metrics"; }

# 1. The healthy links: a scrape, the files it read.
snapshot >"$OUT/before.files"
scrape >"$OUT/before.prom"
touch "$OUT/ready-for-faults"

# 2. The host injects an unsupported request into the first NIC's AER and takes the
#    RDMA NIC's link down; scrape until both show (the kernel handles AER in a thread).
for _ in $(seq 1500); do [ -e "$OUT/faults-injected" ] && break; sleep 0.2; done
for _ in $(seq 300); do
    scrape >"$OUT/after.prom"
    grep -q "^nodeslo_network_carrier{interface=\"$rdma_if\"} 0.0$" "$OUT/after.prom" &&
        grep -q '^nodeslo_pcie_aer_errors_total{aer_severity="nonfatal".*} 1.0$' "$OUT/after.prom" &&
        grep -q '^nodeslo_pcie_device_responding{.*} 0.0$' "$OUT/after.prom" &&
        grep -q '^nodeslo_rdma_port_active{port="1",rdma="rxe0"} 0.0$' "$OUT/after.prom" &&
        break
    sleep 0.5
done
snapshot >"$OUT/after.files"
dmesg >"$OUT/dmesg.txt"
kill "$daemon"; wait "$daemon"; echo "exit $?" >>"$OUT/serve.log"
echo done >"$OUT/done"
