# Board facts as one JSON object (deployer.remote.probe). argv: deploy_root
# stdlib only, Python 3.6-safe: it runs on whatever python the board has.
import glob, hashlib, json, os, platform, struct, subprocess, sys, sysconfig


def rd(p):
    try:
        with open(p, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except Exception:
        return None


def file_facts(rd):
    """Facts from /proc, /sys and /etc files; rd(path) -> text or None. The host parses the
    no-Python probe (deployer.native.shprobe) with this same function, so both probes agree."""
    o = {}
    cpus, cur = [], {}
    for line in (rd("/proc/cpuinfo") or "").splitlines() + [""]:
        if not line.strip():
            if cur:
                cpus.append(cur)
            cur = {}
            continue
        k, _, v = line.partition(":")
        cur[k.strip().lower()] = v.strip()
    o["cpuinfo"] = [c for c in cpus if "processor" in c and c["processor"].isdigit()]
    o["cpuinfo_extra"] = [c for c in cpus if not ("processor" in c and c["processor"].isdigit())]
    freq, gov = {}, {}
    for c in o["cpuinfo"]:
        n = c["processor"]
        f = rd("/sys/devices/system/cpu/cpu%s/cpufreq/cpuinfo_max_freq" % n)
        freq[n] = int(f) if f and f.strip().isdigit() else None
        g = rd("/sys/devices/system/cpu/cpu%s/cpufreq/scaling_governor" % n)
        gov[n] = g.strip() if g else None
    o["max_freq_khz"], o["governors"] = freq, gov
    mem = {}
    for line in (rd("/proc/meminfo") or "").splitlines():
        k, _, v = line.partition(":")
        if v.strip().endswith("kB"):
            mem[k] = int(v.split()[0]) * 1024
    o["mem_total"], o["mem_available"] = mem.get("MemTotal"), mem.get("MemAvailable", mem.get("MemFree"))
    m = rd("/sys/firmware/devicetree/base/model") or rd("/proc/device-tree/model")
    o["dt_model"] = m.strip("\0\n ") if m else None
    t = rd("/sys/class/thermal/thermal_zone0/temp")
    o["temperature_c"] = int(t) / 1000.0 if t and t.strip().lstrip("-").isdigit() else None
    osr = {}
    for line in (rd("/etc/os-release") or "").splitlines():
        k, _, v = line.partition("=")
        osr[k] = v.strip('"')
    o["os"] = osr.get("PRETTY_NAME")
    return o


def main():
    home_rd = os.path.expanduser(sys.argv[1])
    rt = os.path.abspath(home_rd)
    o = {"machine": platform.machine(), "kernel_machine": os.uname()[4], "pointer_bits": struct.calcsize("P") * 8,
         "multiarch": sysconfig.get_config_var("MULTIARCH"), "python": platform.python_version(),
         "python_path": sys.executable, "soabi": sysconfig.get_config_var("SOABI"),
         "python_platform": sysconfig.get_platform(), "hostname": platform.node(), "runtime_dir": rt}
    o["dpkg_arch"] = None
    if not o["multiarch"]:
        try:
            o["dpkg_arch"] = subprocess.check_output(["dpkg", "--print-architecture"], stderr=subprocess.DEVNULL).decode().strip()
        except Exception:
            pass
    try:
        o["glibc"] = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        o["glibc"] = None
    o.update(file_facts(rd))
    o["os_cpu_count"] = os.cpu_count()
    p = rt
    while not os.path.exists(p) and p != os.path.dirname(p):
        p = os.path.dirname(p)
    s = os.statvfs(p)
    o["disk_path"], o["disk_free"] = p, s.f_bavail * s.f_frsize
    runtimes = {}
    rdir = os.path.join(rt, "runtime")
    for name in sorted(os.listdir(rdir)) if os.path.isdir(rdir) else []:
        if not name.startswith("."):
            mk = rd(os.path.join(rdir, name, ".deployer-sha256"))
            runtimes[name] = mk.strip() if mk else None
    o["runtimes"] = runtimes
    models = {}
    mdir = os.path.join(rt, "models")
    for root, dirs, files in os.walk(mdir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fn in sorted(files):
            if fn.startswith("."):
                continue
            fp = os.path.join(root, fn)
            h = hashlib.sha256()
            try:
                with open(fp, "rb") as f:
                    for b in iter(lambda: f.read(1 << 20), b""):
                        h.update(b)
                models[os.path.relpath(fp, mdir)] = {"sha256": h.hexdigest(), "size": os.path.getsize(fp)}
            except OSError:
                pass
    o["models"] = models
    ncnn = None
    for d in sys.path:
        hits = glob.glob(os.path.join(d or ".", "ncnn-*.dist-info"))
        if hits:
            ncnn = os.path.basename(hits[0])[5:-10]
            break
    o["ncnn"] = ncnn
    sys.stdout.write(json.dumps(o))


if __name__ == "__main__":
    main()
