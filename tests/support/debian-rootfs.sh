#!/bin/bash
# Build a bootable Debian 12 root file system image from Debian's packages (debootstrap),
# for tests that need a real systemd as PID 1 (tests/test_deb_systemd.py).
#
#   debian-rootfs.sh OUT.img PACKAGE...
#
# The image holds systemd, the packages named, and this host's kernel modules (the guest
# boots this host's kernel and initrd, see boot-rootfs.sh). The mirror is the one this
# host's apt uses. No image is mounted: debootstrap fills a directory (apt runs in a
# chroot of it with /proc mounted) and mkfs.ext4 -d copies it into the image. Takes ~1.5
# min here, mostly downloads; the test caches the result under a name keyed by this
# script, the package list and the kernel.
set -euo pipefail
out=${1:?usage: debian-rootfs.sh OUT.img PACKAGE...}; shift
kver=$(ls /lib/modules | sort -V | tail -n 1)

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  # The first Debian archive URI of this host's apt sources (deb822 or one-line style).
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[[ -n $mirror ]] || { echo "no Debian mirror in this host's apt sources: set DEBIAN_MIRROR" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/nodeslo-rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
debootstrap --variant=minbase --include=systemd,systemd-sysv,udev,kmod bookworm "$root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
# The rest through apt in the new system: it orders the configuration of packages that
# debootstrap's --include does not (python3-bcrypt failed to configure that way).
mount -t proc proc "$root/proc"
trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
chroot "$root" apt-get install -y -q --no-install-recommends "$@" >"$work/apt.log" 2>&1 \
  || { tail -n 30 "$work/apt.log" >&2; exit 1; }
chroot "$root" apt-get clean
umount "$root/proc"

# The guest runs this host's kernel: its modules (nvme, virtio, ext4...) must be inside.
mkdir -p "$root/lib/modules"
cp -a "/lib/modules/$kver" "$root/lib/modules/"
echo nodeslo-guest >"$root/etc/hostname"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
# Root logs in on the serial console without a password (a throw-away test guest).
sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"
# The test's hook: at boot, mount the host's 9p share (tag "share"), run its guest-script,
# record the exit code and power off. QEMU's -snapshot keeps this image unchanged.
cat >"$root/etc/systemd/system/guest-script.service" <<'UNIT'
[Unit]
Description=Run the host's test script from the 9p share, then power off
After=multi-user.target
[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecStartPre=/bin/mkdir -p /mnt/share
ExecStartPre=/bin/mount -t 9p -o trans=virtio,version=9p2000.L share /mnt/share
ExecStart=/bin/sh -c '/bin/sh /mnt/share/guest-script >/mnt/share/out.log 2>&1; echo $? >/mnt/share/exit-code'
ExecStopPost=/bin/systemctl --no-block poweroff
[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable guest-script.service >/dev/null 2>&1
# No network in the guest: nothing should wait for it.
chroot "$root" systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1 || true
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

size_mb=$(($(du -sm "$root" | cut -f1) + 512))
rm -f "$out.partial"
mkfs.ext4 -q -F -L nodeslo-root -d "$root" "$out.partial" "${size_mb}M"
mv "$out.partial" "$out"
echo "rootfs for $kver: $out (${size_mb} MiB)"
