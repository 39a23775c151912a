#!/bin/sh
# deployer: board-side measurement context (POSIX sh; reads /sys and /proc only, no Python needed).
#
# Why a shell script: it has to work on every board deployer reaches, including images without
# Python and emulated boards under qemu-user, and it must cost almost nothing (it runs right before
# and right after every timed run). The host pipes this file to `sh -s` and parses the lines.
#
# Output: one fact per line, "<kind> <fields...>", a missing value is "-":
#   v 1 | uptime S | nproc N | clk_tck HZ | loadavg L1 L5 L15 RUN/ALL LASTPID
#   mem MEMTOTAL_KB MEMAVAILABLE_KB
#   cpu N GOVERNOR CUR_KHZ MIN_KHZ MAX_KHZ CPUINFO_MAX_KHZ
#   thermal ZONE MILLI_C TYPE
#   throttled 0x...            (Raspberry Pi firmware, vcgencmd get_throttled)
#   nvpmodel TEXT | jetson_clocks TEXT   (Jetson, where the tools exist)
#   stat-begin COLLECTOR_PID, then /proc/<pid>/stat lines verbatim, then stat-end
#
# DEPLOYER_SYSFS_ROOT (optional) is a folder that mirrors the board's filesystem: sys/... is read
# from there instead of /sys and its usr/bin is searched first for vcgencmd/nvpmodel. It exists so
# emulated boards (which share the host kernel's /sys) can present a Pi's cpufreq, thermal and
# throttling state.

R=${DEPLOYER_SYSFS_ROOT:-}
if [ -n "$R" ]; then
    PATH="$R/usr/bin:$PATH"
    export PATH
fi

val() {
    # first line of a file, or "-" when it is missing or unreadable
    if [ -r "$1" ]; then
        v=
        IFS= read -r v < "$1" 2>/dev/null
        [ -n "$v" ] && printf '%s' "$v" || printf '%s' -
    else
        printf '%s' -
    fi
}

echo "v 1"
read -r up _rest < /proc/uptime 2>/dev/null && echo "uptime $up"
n=0
while read -r name _rest; do
    case "$name" in
        cpu[0-9]*) n=$((n + 1)) ;;
    esac
done < /proc/stat
echo "nproc $n"
hz=$(getconf CLK_TCK 2>/dev/null) || hz=
echo "clk_tck ${hz:-100}"
echo "loadavg $(val /proc/loadavg)"

total=- avail=-
while read -r key value _unit; do
    case "$key" in
        MemTotal:) total=$value ;;
        MemAvailable:) avail=$value ;;
    esac
done < /proc/meminfo
echo "mem $total $avail"

for d in "$R"/sys/devices/system/cpu/cpu[0-9]*; do
    [ -d "$d/cpufreq" ] || continue
    f="$d/cpufreq"
    echo "cpu ${d##*/cpu} $(val "$f/scaling_governor") $(val "$f/scaling_cur_freq") $(val "$f/scaling_min_freq")" \
         "$(val "$f/scaling_max_freq") $(val "$f/cpuinfo_max_freq")"
done

for z in "$R"/sys/class/thermal/thermal_zone[0-9]*; do
    [ -r "$z/temp" ] || continue
    echo "thermal ${z##*/} $(val "$z/temp") $(val "$z/type")"
done

if command -v vcgencmd >/dev/null 2>&1; then
    t=$(vcgencmd get_throttled 2>/dev/null) && echo "throttled ${t#*=}"
fi
if command -v nvpmodel >/dev/null 2>&1; then
    m=$(nvpmodel -q 2>/dev/null | head -n 1) && echo "nvpmodel $m"
fi
if command -v jetson_clocks >/dev/null 2>&1; then
    j=$(jetson_clocks --show 2>/dev/null | grep -i -m 1 'cpu') && echo "jetson_clocks $j"
fi

# every process's stat line, raw: one cat instead of a shell loop (a board can have hundreds of
# processes and sh is slow at string work); the host parses them. Races (a process exiting between
# the glob and the read) only lose that process.
echo "stat-begin $$"
cat /proc/[0-9]*/stat 2>/dev/null
echo
echo "stat-end"
exit 0
