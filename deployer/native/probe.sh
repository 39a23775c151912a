# Board facts for boards without Python (POSIX sh: dash, busybox ash). argv: deploy_root
# Sent as `sh -c SCRIPT sh ROOT` by deployer.native.shprobe, which parses the sections below into the
# same facts the Python probe (deployer/remote/board/probe.py) returns. Files are read with shell
# builtins and the parsing is done on the host: under emulation or on a tiny board every process
# start costs up to a second, so the whole probe starts only a handful of programs.
root=${1:-.deployer}
case $root in
  /*) rt=$root ;;
  .) rt=$HOME ;;
  *) rt=$HOME/$root ;;
esac
sec() { printf '\n==deployer:%s\n' "$1"; }
show() { # a text file's lines, without starting a program
  [ -r "$1" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do printf '%s\n' "$line"; done < "$1" 2>/dev/null
}
dump() { sec "file $1"; show "$1"; }
echo "==deployer-probe 1"
sec machine; uname -m
sec hostname; show /proc/sys/kernel/hostname
sec runtime_dir; printf '%s' "$rt"
# the userland's pointer size and machine: the ELF header of the shell running this script
sec elf; od -An -tu1 -N20 /bin/sh 2>/dev/null
sec dpkg_arch; command -v dpkg >/dev/null 2>&1 && dpkg --print-architecture 2>/dev/null
sec glibc; command -v getconf >/dev/null 2>&1 && getconf GNU_LIBC_VERSION 2>/dev/null
dump /proc/cpuinfo
dump /proc/meminfo
dump /etc/os-release
dump /sys/firmware/devicetree/base/model
dump /sys/class/thermal/thermal_zone0/temp
for d in /sys/devices/system/cpu/cpu[0-9]*; do
  [ -d "$d/cpufreq" ] || continue
  dump "$d/cpufreq/cpuinfo_max_freq"
  dump "$d/cpufreq/scaling_governor"
done
# free space where the deploy root is (or would be)
p=$rt
while [ ! -e "$p" ] && [ -n "$p" ] && [ "$p" != / ]; do p=${p%/*}; done
sec disk_path; printf '%s' "${p:-/}"
sec disk; df -Pk "${p:-/}" 2>/dev/null
if [ -d "$rt/runtime" ]; then
  for d in "$rt"/runtime/*; do
    [ -d "$d" ] || continue
    sec "runtime ${d##*/}"; show "$d/.deployer-sha256"
  done
fi
if [ -d "$rt/models" ]; then
  sec models
  (cd "$rt/models" && find . -type f ! -name '.*' ! -path '*/.*' -exec sha256sum {} + 2>/dev/null)
  sec model_sizes
  (cd "$rt/models" && find . -type f ! -name '.*' ! -path '*/.*' -exec wc -c {} + 2>/dev/null)
fi
sec end
