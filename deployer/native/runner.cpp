// deployer's native board runner: ncnn linked statically into one executable per arch.
//
// It speaks exactly the JSON-line protocol of deployer/remote/runner.py (the Python-wheel runner),
// so the host session reads either one with the same code:
//   board  (facts + options, before loading)
//   iter   (one per timed iteration, flushed as it happens)
//   output (opt-in, the output tensor as base64 float32)
//   layers (benchmark flavour with --layers: per-layer times of every timed iteration)
//   stats  (last line; partial + signal when SIGINT/SIGTERM/SIGHUP stopped the run)
//   error  (one line, exit code 2)
// A closed stdout ends the run with exit code 141. Inputs are generated with the same Mersenne
// Twister stream as Python's random.Random(seed), so both runtimes feed bit-identical tensors.
//
// Built by deployer/native/build.py; RUNNER_NCNN_VERSION and RUNNER_LAYERS come from the build.

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "cpu.h"
#include "layer.h"
#include "mat.h"
#include "net.h"

#ifndef RUNNER_NCNN_VERSION
#define RUNNER_NCNN_VERSION "unknown"
#endif
#ifndef RUNNER_LAYERS
#define RUNNER_LAYERS 0
#endif

static const int PROTOCOL = 1;

// ------------------------------------------------------------------ small helpers

static double now_s()
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct RunError
{
    std::string message;  // "Kind: text", like the Python runner's "ValueError: ..."
};

static RunError fail(const char* kind, const char* fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    RunError e;
    e.message = std::string(kind) + ": " + buf;
    return e;
}

struct StdoutClosed
{
};

static volatile sig_atomic_t g_signal = 0;

static void on_signal(int signum)
{
    if (!g_signal)
        g_signal = signum;
}

// SA_RESTART: a blocked write resumes after the handler instead of failing with EINTR
static void handle(int signum, void (*handler)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(signum, &sa, 0);
}

// --lease S (runner.py's _hold_lease): the host sends a byte on stdin every S/3 s; S s of silence or
// EOF end the run at once. A dead link the board's sshd does not notice otherwise left the runner
// timing for up to --duration. Checked from SIGALRM once a second because the main loop may be
// blocked writing to a stdout nobody drains; poll, read, clock_gettime, alarm and _exit are all
// async-signal-safe.
static const int LEASE_LOST = 124;
static double g_lease = 0;
static double g_last_beat = 0;

static void on_alarm(int)
{
    int saved = errno;
    struct pollfd p;
    p.fd = 0;
    p.events = POLLIN;
    char buf[256];
    for (;;)
    {
        p.revents = 0;
        if (poll(&p, 1, 0) <= 0)
            break;
        ssize_t n = read(0, buf, sizeof(buf));
        if (n == 0)
            _exit(LEASE_LOST);  // EOF: the host closed the channel
        if (n < 0)
            break;
        g_last_beat = now_s();
    }
    if (now_s() - g_last_beat > g_lease)
        _exit(LEASE_LOST);
    alarm(1);
    errno = saved;
}

static void hold_lease(double lease)
{
    g_lease = lease;
    g_last_beat = now_s();
    handle(SIGALRM, on_alarm);
    alarm(1);
}

// ------------------------------------------------------------------ JSON writer

class Json
{
public:
    std::string s;

    Json& raw(const std::string& text)
    {
        s += text;
        return *this;
    }
    Json& str(const std::string& text)
    {
        s += '"';
        for (size_t i = 0; i < text.size(); i++)
        {
            unsigned char ch = (unsigned char)text[i];
            switch (ch)
            {
            case '"': s += "\\\""; break;
            case '\\': s += "\\\\"; break;
            case '\n': s += "\\n"; break;
            case '\r': s += "\\r"; break;
            case '\t': s += "\\t"; break;
            default:
                if (ch < 0x20)
                {
                    char buf[8];
                    snprintf(buf, sizeof(buf), "\\u%04x", ch);
                    s += buf;
                }
                else
                    s += (char)ch;
            }
        }
        s += '"';
        return *this;
    }
    Json& num(double v)
    {
        if (v != v)
            s += "NaN";
        else if (isinf(v))
            s += v > 0 ? "Infinity" : "-Infinity";
        else
        {
            char buf[40];
            snprintf(buf, sizeof(buf), "%.17g", v);
            s += buf;
            if (!strpbrk(buf, ".eE"))
                s += ".0";  // stays a float for the host, like Python's repr
        }
        return *this;
    }
    Json& integer(long long v)
    {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", v);
        s += buf;
        return *this;
    }
    Json& boolean(bool v)
    {
        s += v ? "true" : "false";
        return *this;
    }
    Json& null()
    {
        s += "null";
        return *this;
    }
    Json& key(const char* k)
    {
        if (!s.empty() && s[s.size() - 1] != '{' && s[s.size() - 1] != '[')
            s += ',';
        str(k);
        s += ':';
        return *this;
    }
    Json& sep()
    {
        if (!s.empty() && s[s.size() - 1] != '[' && s[s.size() - 1] != '{')
            s += ',';
        return *this;
    }
    Json& opt_str(const char* k, const std::string* v)
    {
        key(k);
        return v ? str(*v) : null();
    }
};

static void emit(const std::string& line)
{
    std::string out = line + "\n";
    size_t done = 0;
    while (done < out.size())
    {
        ssize_t n = write(1, out.data() + done, out.size() - done);
        if (n < 0)
        {
            if (errno == EINTR)
                continue;
            throw StdoutClosed();
        }
        done += (size_t)n;
    }
}

// ------------------------------------------------------------------ Python-compatible random input

// MT19937 seeded like CPython's random.seed(int): init_by_array over the 32-bit words of |seed|.
class PyRandom
{
public:
    explicit PyRandom(unsigned long long seed)
    {
        std::vector<uint32_t> key;
        if (seed == 0)
            key.push_back(0);
        while (seed)
        {
            key.push_back((uint32_t)(seed & 0xffffffffu));
            seed >>= 32;
        }
        init_by_array(key);
    }

    double random()
    {
        uint32_t a = genrand() >> 5, b = genrand() >> 6;
        return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
    }

private:
    uint32_t mt[624];
    int mti;

    void init_genrand(uint32_t s)
    {
        mt[0] = s;
        for (mti = 1; mti < 624; mti++)
            mt[mti] = 1812433253u * (mt[mti - 1] ^ (mt[mti - 1] >> 30)) + (uint32_t)mti;
    }

    void init_by_array(const std::vector<uint32_t>& key)
    {
        init_genrand(19650218u);
        int i = 1, j = 0;
        int n = (int)key.size();
        for (int k = (624 > n ? 624 : n); k; k--)
        {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint32_t)j;
            i++;
            j++;
            if (i >= 624)
            {
                mt[0] = mt[623];
                i = 1;
            }
            if (j >= n)
                j = 0;
        }
        for (int k = 623; k; k--)
        {
            mt[i] = (mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941u)) - (uint32_t)i;
            i++;
            if (i >= 624)
            {
                mt[0] = mt[623];
                i = 1;
            }
        }
        mt[0] = 0x80000000u;
        mti = 624;
    }

    uint32_t genrand()
    {
        static const uint32_t mag01[2] = {0x0u, 0x9908b0dfu};
        uint32_t y;
        if (mti >= 624)
        {
            int kk;
            for (kk = 0; kk < 624 - 397; kk++)
            {
                y = (mt[kk] & 0x80000000u) | (mt[kk + 1] & 0x7fffffffu);
                mt[kk] = mt[kk + 397] ^ (y >> 1) ^ mag01[y & 1u];
            }
            for (; kk < 623; kk++)
            {
                y = (mt[kk] & 0x80000000u) | (mt[kk + 1] & 0x7fffffffu);
                mt[kk] = mt[kk + (397 - 624)] ^ (y >> 1) ^ mag01[y & 1u];
            }
            y = (mt[623] & 0x80000000u) | (mt[0] & 0x7fffffffu);
            mt[623] = mt[396] ^ (y >> 1) ^ mag01[y & 1u];
            mti = 0;
        }
        y = mt[mti++];
        y ^= (y >> 11);
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= (y >> 18);
        return y;
    }
};

// ------------------------------------------------------------------ arguments (same flags as runner.py)

struct Args
{
    std::string param, bin, shape, input_blob, output_blob, fill, input_file;
    bool has_shape, has_input_blob, has_output_blob, has_input_file, has_duration;
    long long seed;
    int iterations, warmup, threads, powersave, int8, fp16, winograd, sgemm, lightmode, packing;
    double duration, lease;
    bool return_output, layers, facts_only;

    Args()
        : fill("random"), has_shape(false), has_input_blob(false), has_output_blob(false), has_input_file(false),
          has_duration(false), seed(0), iterations(10), warmup(3), threads(0), powersave(0), int8(1), fp16(0),
          winograd(1), sgemm(1), lightmode(1), packing(1), duration(0), lease(0), return_output(false), layers(false),
          facts_only(false)
    {
    }
};

static const char* USAGE
    = "usage: runner --param P --bin B [--shape W,H,C] [--input-blob B] [--output-blob B] "
      "[--fill random|VALUE] [--seed N] [--input-file F] [--iterations N | --duration S] [--warmup K] "
      "[--threads T] [--powersave 0|1|2] [--int8 0|1] [--fp16 0|1] [--winograd 0|1] [--sgemm 0|1] "
      "[--lightmode 0|1] [--packing 0|1] [--return-output] [--layers] [--lease S] | --facts";

static bool parse_ll(const std::string& text, long long* out)
{
    if (text.empty())
        return false;
    char* end = 0;
    errno = 0;
    long long v = strtoll(text.c_str(), &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

static bool parse_double(const std::string& text, double* out)
{
    if (text.empty())
        return false;
    char* end = 0;
    errno = 0;
    double v = strtod(text.c_str(), &end);
    while (*end == ' ')
        end++;
    if (errno == ERANGE || *end)
        return false;
    *out = v;
    return true;
}

static Args parse_args(int argc, char** argv)
{
    Args a;
    struct IntFlag
    {
        const char* name;
        int* dest;
        int max_choice;  // -1: any int
    } ints[] = {
        {"--iterations", &a.iterations, -1}, {"--warmup", &a.warmup, -1}, {"--threads", &a.threads, -1},
        {"--powersave", &a.powersave, 2}, {"--int8", &a.int8, 1}, {"--fp16", &a.fp16, 1},
        {"--winograd", &a.winograd, 1}, {"--sgemm", &a.sgemm, 1}, {"--lightmode", &a.lightmode, 1},
        {"--packing", &a.packing, 1},
    };
    struct StrFlag
    {
        const char* name;
        std::string* dest;
        bool* has;
    } strs[] = {
        {"--param", &a.param, 0}, {"--bin", &a.bin, 0}, {"--shape", &a.shape, &a.has_shape},
        {"--input-blob", &a.input_blob, &a.has_input_blob}, {"--output-blob", &a.output_blob, &a.has_output_blob},
        {"--fill", &a.fill, 0}, {"--input-file", &a.input_file, &a.has_input_file},
    };
    bool has_param = false, has_bin = false;
    for (int i = 1; i < argc; i++)
    {
        std::string arg = argv[i];
        if (arg == "-h" || arg == "--help")
            throw fail("UsageError", "%s", USAGE);
        if (arg == "--return-output")
        {
            a.return_output = true;
            continue;
        }
        if (arg == "--layers")
        {
            a.layers = true;
            continue;
        }
        if (arg == "--facts")
        {
            a.facts_only = true;
            continue;
        }
        bool known = false;
        if (i + 1 >= argc)
        {
            for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++)
                known = known || arg == ints[k].name;
            for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++)
                known = known || arg == strs[k].name;
            known = known || arg == "--seed" || arg == "--duration" || arg == "--lease";
            if (known)
                throw fail("UsageError", "%s needs a value", arg.c_str());
            throw fail("UsageError", "unknown argument '%s'; %s", arg.c_str(), USAGE);
        }
        std::string value = argv[i + 1];
        for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]) && !known; k++)
        {
            if (arg != ints[k].name)
                continue;
            long long v;
            if (!parse_ll(value, &v))
                throw fail("UsageError", "%s '%s' is not a valid int", arg.c_str(), value.c_str());
            if (ints[k].max_choice >= 0 && (v < 0 || v > ints[k].max_choice))
                throw fail("UsageError", "%s must be one of %s", arg.c_str(), ints[k].max_choice == 2 ? "0, 1, 2" : "0, 1");
            *ints[k].dest = (int)v;
            known = true;
        }
        for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]) && !known; k++)
        {
            if (arg != strs[k].name)
                continue;
            *strs[k].dest = value;
            if (strs[k].has)
                *strs[k].has = true;
            has_param = has_param || arg == "--param";
            has_bin = has_bin || arg == "--bin";
            known = true;
        }
        if (!known && arg == "--seed")
        {
            if (!parse_ll(value, &a.seed))
                throw fail("UsageError", "--seed '%s' is not a valid int", value.c_str());
            known = true;
        }
        if (!known && arg == "--duration")
        {
            if (!parse_double(value, &a.duration))
                throw fail("UsageError", "--duration '%s' is not a valid float", value.c_str());
            a.has_duration = true;
            known = true;
        }
        if (!known && arg == "--lease")
        {
            if (!parse_double(value, &a.lease) || !(a.lease >= 0))
                throw fail("UsageError", "--lease '%s' is not a valid float", value.c_str());
            known = true;
        }
        if (!known)
            throw fail("UsageError", "unknown argument '%s'; %s", arg.c_str(), USAGE);
        i++;
    }
    if (!a.facts_only && !has_param)
        throw fail("UsageError", "--param is required; %s", USAGE);
    if (!a.facts_only && !has_bin)
        throw fail("UsageError", "--bin is required; %s", USAGE);
    if (a.iterations < 1 && !a.has_duration)
        a.iterations = 1;
    return a;
}

// ------------------------------------------------------------------ board facts (what runner.py reports)

static bool read_file(const std::string& path, std::string* out)
{
    FILE* fp = fopen(path.c_str(), "rb");
    if (!fp)
        return false;
    std::string text;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), fp)) > 0)
        text.append(buf, n);
    fclose(fp);
    std::string clean;
    for (size_t i = 0; i < text.size(); i++)
        if (text[i] != '\0')
            clean += text[i];
    size_t b = clean.find_first_not_of(" \t\r\n");
    size_t e = clean.find_last_not_of(" \t\r\n");
    *out = b == std::string::npos ? std::string() : clean.substr(b, e - b + 1);
    return true;
}

static bool read_int(const std::string& path, long long* out)
{
    std::string text;
    return read_file(path, &text) && parse_ll(text, out);
}

static std::string lower(std::string s)
{
    for (size_t i = 0; i < s.size(); i++)
        s[i] = (char)tolower((unsigned char)s[i]);
    return s;
}

static bool cpu_model(std::string* out)
{
    std::string text;
    if (!read_file("/proc/cpuinfo", &text))
        return false;
    std::map<std::string, std::string> fields;
    size_t pos = 0;
    while (pos < text.size())
    {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? text.size() : nl + 1;
        size_t colon = line.find(':');
        if (colon == std::string::npos)
            continue;
        std::string k = line.substr(0, colon), v = line.substr(colon + 1);
        k = lower(k.substr(0, k.find_last_not_of(" \t") + 1));
        size_t b = v.find_first_not_of(" \t");
        v = b == std::string::npos ? std::string() : v.substr(b, v.find_last_not_of(" \t\r") - b + 1);
        if (!fields.count(k))
            fields[k] = v;
    }
    static const char* parts[][2] = {
        {"0xd03", "Cortex-A53"}, {"0xd04", "Cortex-A35"}, {"0xd05", "Cortex-A55"}, {"0xd07", "Cortex-A57"},
        {"0xd08", "Cortex-A72"}, {"0xd09", "Cortex-A73"}, {"0xd0a", "Cortex-A75"}, {"0xd0b", "Cortex-A76"},
        {"0xd0d", "Cortex-A77"}, {"0xd41", "Cortex-A78"}, {"0xd4b", "Cortex-A78C"}, {"0xc07", "Cortex-A7"},
        {"0xc0f", "Cortex-A15"}, {"0xc09", "Cortex-A9"}, {"0xd0c", "Neoverse-N1"},
    };
    if (fields.count("cpu part"))
    {
        std::string part = lower(fields["cpu part"]);
        for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
            if (part == parts[i][0])
            {
                *out = parts[i][1];
                return true;
            }
    }
    const char* fallbacks[] = {"model name", "hardware", "processor"};
    for (int i = 0; i < 3; i++)
        if (fields.count(fallbacks[i]))
        {
            *out = fields[fallbacks[i]];
            return true;
        }
    return false;
}

// folder/prefixN entries in numeric order
static std::vector<std::pair<int, std::string> > numbered(const char* folder, const char* prefix)
{
    std::vector<std::pair<int, std::string> > found;
    DIR* dir = opendir(folder);
    if (!dir)
        return found;
    size_t plen = strlen(prefix);
    while (struct dirent* ent = readdir(dir))
    {
        std::string name = ent->d_name;
        if (name.compare(0, plen, prefix) != 0 || name.size() == plen)
            continue;
        std::string rest = name.substr(plen);
        long long n;
        if (rest.find_first_not_of("0123456789") != std::string::npos || !parse_ll(rest, &n))
            continue;
        found.push_back(std::make_pair((int)n, std::string(folder) + "/" + name));
    }
    closedir(dir);
    std::sort(found.begin(), found.end());
    return found;
}

static void put_opt_int(Json& j, const char* k, const std::string& path)
{
    long long v;
    j.key(k);
    if (read_int(path, &v))
        j.integer(v);
    else
        j.null();
}

static void put_opt_text(Json& j, const char* k, const std::string& path)
{
    std::string v;
    j.key(k);
    if (read_file(path, &v))
        j.str(v);
    else
        j.null();
}

static bool throttled(std::string* out)
{
    const char* path_env = getenv("PATH");
    std::string paths = std::string(path_env ? path_env : "/usr/bin:/bin") + ":/opt/vc/bin";
    size_t pos = 0;
    while (pos <= paths.size())
    {
        size_t colon = paths.find(':', pos);
        std::string dir = paths.substr(pos, colon == std::string::npos ? std::string::npos : colon - pos);
        pos = colon == std::string::npos ? paths.size() + 1 : colon + 1;
        std::string exe = dir + "/vcgencmd";
        if (dir.empty() || access(exe.c_str(), X_OK) != 0)
            continue;
        std::string cmd = "'" + exe + "' get_throttled 2>&1";
        if (exe.find('\'') != std::string::npos)
            return false;
        FILE* fp = popen(cmd.c_str(), "r");
        if (!fp)
            return false;
        char buf[256] = {0};
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        pclose(fp);
        std::string text(buf, n);
        size_t eq = text.find('=');
        if (eq == std::string::npos)
            return false;
        text = text.substr(eq + 1);
        text = text.substr(0, text.find_last_not_of(" \r\n") + 1);
        if (text.empty())
            return false;
        *out = text;
        return true;
    }
    return false;
}

static void volatile_state(Json& j)
{
    j.key("cpufreq").raw("[");
    std::vector<std::pair<int, std::string> > cpus = numbered("/sys/devices/system/cpu", "cpu");
    for (size_t i = 0; i < cpus.size(); i++)
    {
        std::string freq = cpus[i].second + "/cpufreq";
        struct stat st;
        if (stat(freq.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        j.sep().raw("{");
        j.key("cpu").integer(cpus[i].first);
        put_opt_text(j, "governor", freq + "/scaling_governor");
        put_opt_int(j, "cur_khz", freq + "/scaling_cur_freq");
        put_opt_int(j, "max_khz", freq + "/cpuinfo_max_freq");
        j.raw("}");
    }
    j.raw("]");
    j.key("thermal").raw("[");
    std::vector<std::pair<int, std::string> > zones = numbered("/sys/class/thermal", "thermal_zone");
    for (size_t i = 0; i < zones.size(); i++)
    {
        long long milli;
        if (!read_int(zones[i].second + "/temp", &milli))
            continue;
        j.sep().raw("{");
        j.key("zone").str(zones[i].second.substr(zones[i].second.rfind('/') + 1));
        put_opt_text(j, "type", zones[i].second + "/type");
        j.key("celsius").num(milli / 1000.0);
        j.raw("}");
    }
    j.raw("]");
    std::string flags;
    j.key("throttled");
    if (throttled(&flags))
        j.str(flags);
    else
        j.null();
    put_opt_text(j, "loadavg", "/proc/loadavg");
}

static void board_facts(Json& j)
{
    struct utsname u;
    uname(&u);
    j.key("machine").str(u.machine);
    j.key("pointer_bits").integer((long long)sizeof(void*) * 8);
    j.key("python").null();
    j.key("hostname").str(u.nodename);
    put_opt_text(j, "model", "/sys/firmware/devicetree/base/model");
    std::string cpu;
    j.key("cpu");
    if (cpu_model(&cpu))
        j.str(cpu);
    else
        j.null();
    j.key("cores").integer(sysconf(_SC_NPROCESSORS_ONLN));
    j.key("ncnn_cpu_count").integer(ncnn::get_cpu_count());
    j.key("ncnn_big_cpu_count").integer(ncnn::get_big_cpu_count());
    j.key("ncnn_version").str(RUNNER_NCNN_VERSION);
    j.key("runtime").str("native");
    j.key("layers_build").boolean(RUNNER_LAYERS != 0);
    j.key("cpu_features").raw("{");
#if defined(__arm__) || defined(__aarch64__)
    j.key("arm_neon").boolean(ncnn::cpu_support_arm_neon());
    j.key("arm_vfpv4").boolean(ncnn::cpu_support_arm_vfpv4());
    j.key("arm_asimdhp").boolean(ncnn::cpu_support_arm_asimdhp());
    j.key("arm_asimddp").boolean(ncnn::cpu_support_arm_asimddp());
    j.key("arm_asimdfhm").boolean(ncnn::cpu_support_arm_asimdfhm());
    j.key("arm_bf16").boolean(ncnn::cpu_support_arm_bf16());
    j.key("arm_i8mm").boolean(ncnn::cpu_support_arm_i8mm());
    j.key("arm_sve").boolean(ncnn::cpu_support_arm_sve());
    j.key("arm_sve2").boolean(ncnn::cpu_support_arm_sve2());
#else
    j.key("x86_avx").boolean(ncnn::cpu_support_x86_avx());
    j.key("x86_avx2").boolean(ncnn::cpu_support_x86_avx2());
    j.key("x86_fma").boolean(ncnn::cpu_support_x86_fma());
    j.key("x86_avx512").boolean(ncnn::cpu_support_x86_avx512());
    j.key("x86_avx512_vnni").boolean(ncnn::cpu_support_x86_avx512_vnni());
#endif
    j.raw("}");
    volatile_state(j);
}

// ------------------------------------------------------------------ statistics (runner.py's summarize)

static double percentile(const std::vector<double>& sorted, double q)
{
    if (sorted.empty())
        return NAN;
    double pos = (sorted.size() - 1) * q / 100.0;
    size_t lo = (size_t)floor(pos);
    size_t hi = std::min(lo + 1, sorted.size() - 1);
    double frac = pos - lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

static void summarize(Json& j, const std::vector<double>& samples)
{
    j.key("count").integer((long long)samples.size());
    if (samples.empty())
        return;
    std::vector<double> s(samples);
    std::sort(s.begin(), s.end());
    double mean = 0;
    for (size_t i = 0; i < s.size(); i++)
        mean += s[i];
    mean /= s.size();
    double var = 0;
    for (size_t i = 0; i < s.size(); i++)
        var += (s[i] - mean) * (s[i] - mean);
    var /= s.size();
    j.key("min_ms").num(s[0]);
    j.key("median_ms").num(percentile(s, 50.0));
    j.key("mean_ms").num(mean);
    j.key("p90_ms").num(percentile(s, 90.0));
    j.key("p99_ms").num(percentile(s, 99.0));
    j.key("max_ms").num(s[s.size() - 1]);
    j.key("std_ms").num(sqrt(var));
}

static long peak_rss_kb()
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss;
}

// ------------------------------------------------------------------ per-layer times (benchmark flavour)

#if RUNNER_LAYERS
// net.cpp compiled with NCNN_BENCHMARK calls these around every layer's forward; this build
// replaces ncnn's printing versions with ones that record into memory (no stderr parsing).
struct LayerTimes
{
    std::string type, name;
    std::vector<double> ms;
};
static std::vector<LayerTimes> g_layers;
static std::map<const ncnn::Layer*, size_t> g_layer_index;
static bool g_record = false;

namespace ncnn {
void benchmark(const Layer* layer, double start, double end)
{
    if (!g_record)
        return;
    std::map<const Layer*, size_t>::iterator it = g_layer_index.find(layer);
    size_t idx;
    if (it == g_layer_index.end())
    {
        idx = g_layers.size();
        g_layer_index[layer] = idx;
        LayerTimes t;
        t.type = layer->type;
        t.name = layer->name;
        g_layers.push_back(t);
    }
    else
        idx = it->second;
    g_layers[idx].ms.push_back(end - start);
}

void benchmark(const Layer* layer, const Mat&, Mat&, double start, double end)
{
    benchmark(layer, start, end);
}
} // namespace ncnn
#endif

// ------------------------------------------------------------------ the run

static std::vector<int> parse_shape(const std::string& text)
{
    std::vector<int> dims;
    size_t pos = 0;
    while (pos <= text.size())
    {
        size_t comma = text.find(',', pos);
        std::string part = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        long long v;
        if (!parse_ll(part, &v))
            throw fail("ValueError", "shape '%s' must be W,H,C integers", text.c_str());
        dims.push_back((int)v);
        if (comma == std::string::npos)
            break;
        pos = comma + 1;
    }
    if (dims.empty() || dims.size() > 4)
        throw fail("ValueError", "shape '%s' must be 1 to 4 positive integers (W,H,C)", text.c_str());
    for (size_t i = 0; i < dims.size(); i++)
        if (dims[i] <= 0)
            throw fail("ValueError", "shape '%s' must be 1 to 4 positive integers (W,H,C)", text.c_str());
    return dims;
}

// The Input layer's 0=w 1=h 2=c, so --shape can be omitted for fixed-size models.
static std::vector<int> input_shape_from_param(const std::string& path, const std::string& blob)
{
    std::vector<int> dims;
    std::string text;
    if (!read_file(path, &text))
        return dims;
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos < text.size())
    {
        size_t nl = text.find('\n', pos);
        lines.push_back(text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
        pos = nl == std::string::npos ? text.size() : nl + 1;
    }
    for (size_t li = 2; li < lines.size(); li++)
    {
        std::vector<std::string> tok;
        char* copy = strdup(lines[li].c_str());
        for (char* t = strtok(copy, " \t\r"); t; t = strtok(0, " \t\r"))
            tok.push_back(t);
        free(copy);
        if (tok.size() < 4 || tok[0] != "Input")
            continue;
        long long nb, nt;
        if (!parse_ll(tok[2], &nb) || !parse_ll(tok[3], &nt))
            continue;
        bool match = false;
        for (long long k = 0; k < nt && 4 + nb + k < (long long)tok.size(); k++)
            match = match || tok[4 + nb + k] == blob;
        if (!match)
            continue;
        long long wh[3] = {0, 0, 0};
        for (size_t k = 4 + nb + nt; k < tok.size(); k++)
        {
            size_t eq = tok[k].find('=');
            if (eq == std::string::npos)
                continue;
            std::string id = tok[k].substr(0, eq);
            long long v;
            if ((id == "0" || id == "1" || id == "2") && parse_ll(tok[k].substr(eq + 1), &v))
                wh[id[0] - '0'] = v;
        }
        for (int k = 0; k < 3; k++)
            if (wh[k] > 0)
                dims.push_back((int)wh[k]);
        return dims;
    }
    return dims;
}

static ncnn::Mat make_input(const Args& args, const std::vector<int>& shape)
{
    size_t count = 1;
    for (size_t i = 0; i < shape.size(); i++)
        count *= (size_t)shape[i];
    std::vector<float> values(count);
    if (args.has_input_file)
    {
        std::string data;
        FILE* fp = fopen(args.input_file.c_str(), "rb");
        if (!fp)
            throw fail("FileNotFoundError", "input file %s: %s", args.input_file.c_str(), strerror(errno));
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), fp)) > 0)
            data.append(buf, n);
        fclose(fp);
        if (data.size() != count * 4)
        {
            std::string dims;
            for (size_t i = 0; i < shape.size(); i++)
                dims += (i ? "," : "") + std::to_string(shape[i]);
            throw fail("ValueError", "input file %s has %zu bytes; shape %s needs %zu float32 values (%zu bytes)",
                       args.input_file.c_str(), data.size(), dims.c_str(), count, count * 4);
        }
        memcpy(values.data(), data.data(), count * 4);  // little-endian boards, like the host
    }
    else if (args.fill == "random")
    {
        PyRandom rng((unsigned long long)(args.seed < 0 ? -args.seed : args.seed));
        for (size_t i = 0; i < count; i++)
            values[i] = (float)(rng.random() * 2.0 - 1.0);
    }
    else
    {
        double v;
        if (!parse_double(args.fill, &v))
            throw fail("ValueError", "fill '%s' must be 'random' or a number", args.fill.c_str());
        for (size_t i = 0; i < count; i++)
            values[i] = (float)v;
    }
    ncnn::Mat m;
    if (shape.size() == 1)
        m.create(shape[0]);
    else if (shape.size() == 2)
        m.create(shape[0], shape[1]);
    else if (shape.size() == 3)
        m.create(shape[0], shape[1], shape[2]);
    else
        m.create(shape[0], shape[1], shape[2], shape[3]);
    size_t plane = (size_t)m.w * m.h * m.d;
    for (int q = 0; q < m.c; q++)
        memcpy(m.channel(q), values.data() + q * plane, plane * sizeof(float));
    return m;
}

static std::string base64(const unsigned char* data, size_t n)
{
    static const char* tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((n + 2) / 3 * 4);
    for (size_t i = 0; i < n; i += 3)
    {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < n)
            v |= data[i + 2];
        out += tbl[(v >> 18) & 63];
        out += tbl[(v >> 12) & 63];
        out += i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        out += i + 2 < n ? tbl[v & 63] : '=';
    }
    return out;
}

static void options_used(Json& j, const Args& a)
{
    j.key("threads").integer(a.threads);
    j.key("powersave").integer(a.powersave);
    j.key("int8").boolean(a.int8 != 0);
    j.key("fp16").boolean(a.fp16 != 0);
    j.key("winograd").boolean(a.winograd != 0);
    j.key("sgemm").boolean(a.sgemm != 0);
    j.key("lightmode").boolean(a.lightmode != 0);
    j.key("packing").boolean(a.packing != 0);
    j.key("warmup").integer(a.warmup);
    j.key("iterations").integer(a.iterations);
    j.key("duration_s");
    if (a.has_duration)
        j.num(a.duration);
    else
        j.null();
    j.key("fill").str(a.has_input_file ? std::string("file") : a.fill);
    j.key("seed").integer(a.seed);
    j.key("layers").boolean(a.layers);
}

static bool file_exists(const std::string& path)
{
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

static int run(Args& args, double t_start)
{
    if (args.layers && !RUNNER_LAYERS)
        throw fail("ValueError", "--layers needs the benchmark build of the native runner (deployer runtime build --benchmark)");

    ncnn::Net net;
    if (args.threads <= 0)
        args.threads = std::max(1, ncnn::get_physical_big_cpu_count());
    ncnn::set_cpu_powersave(args.powersave);
    ncnn::set_omp_dynamic(0);
    ncnn::set_omp_num_threads(args.threads);
    net.opt.num_threads = args.threads;
    net.opt.use_int8_inference = args.int8 != 0;
    net.opt.use_fp16_storage = args.fp16 != 0;
    net.opt.use_fp16_packed = args.fp16 != 0;
    net.opt.use_fp16_arithmetic = args.fp16 != 0;
    net.opt.use_winograd_convolution = args.winograd != 0;
    net.opt.use_sgemm_convolution = args.sgemm != 0;
    net.opt.lightmode = args.lightmode != 0;
    net.opt.use_packing_layout = args.packing != 0;
    net.opt.use_vulkan_compute = false;

    {
        Json j;
        j.raw("{").key("type").str("board").key("protocol").integer(PROTOCOL).key("pid").integer(getpid());
        j.key("import_s").num(now_s() - t_start);
        j.key("options").raw("{");
        options_used(j, args);
        j.raw("}").key("facts").raw("{");
        board_facts(j);
        j.raw("}}");
        emit(j.s);
    }
    if (args.facts_only)
        return 0;

    if (!file_exists(args.param))
        throw fail("ValueError", "--param %s: no such file", args.param.c_str());
    if (!file_exists(args.bin))
        throw fail("ValueError", "--bin %s: no such file", args.bin.c_str());
    double t_load = now_s();
    if (net.load_param(args.param.c_str()) != 0)
        throw fail("ValueError", "ncnn could not load %s (not an ncnn .param?)", args.param.c_str());
    if (net.load_model(args.bin.c_str()) != 0)
        throw fail("ValueError", "ncnn could not load %s (does it match the .param?)", args.bin.c_str());
    double load_ms = (now_s() - t_load) * 1000.0;

    const std::vector<const char*>& inputs = net.input_names();
    const std::vector<const char*>& outputs = net.output_names();
    std::string in_blob = args.has_input_blob ? args.input_blob : (inputs.empty() ? "" : inputs[0]);
    std::string out_blob = args.has_output_blob ? args.output_blob : (outputs.empty() ? "" : outputs.back());
    bool in_ok = false;
    std::string in_list;
    for (size_t i = 0; i < inputs.size(); i++)
    {
        in_ok = in_ok || in_blob == inputs[i];
        in_list += (i ? ", " : "") + std::string(inputs[i]);
    }
    if (in_blob.empty() || !in_ok)
        throw fail("ValueError", "input blob '%s' is not an input of %s (inputs: %s)", in_blob.c_str(),
                   args.param.c_str(), in_list.empty() ? "none" : in_list.c_str());
    bool out_ok = false;
    for (size_t i = 0; i < net.blobs().size(); i++)
        out_ok = out_ok || net.blobs()[i].name == out_blob;
    if (out_blob.empty() || !out_ok)
    {
        std::string out_list;
        for (size_t i = 0; i < outputs.size(); i++)
            out_list += (i ? ", " : "") + std::string(outputs[i]);
        throw fail("ValueError", "output blob '%s' is not a blob of %s (outputs: %s)", out_blob.c_str(),
                   args.param.c_str(), out_list.empty() ? "none" : out_list.c_str());
    }
    std::vector<int> shape = args.has_shape ? parse_shape(args.shape) : input_shape_from_param(args.param, in_blob);
    if (shape.empty())
        throw fail("ValueError", "%s has no fixed input shape; pass --shape W,H,C", args.param.c_str());
    ncnn::Mat mat_in = make_input(args, shape);
    // one inference = every output extracted, as ncnn's benchncnn times it (a detector's heads are
    // part of its latency); --output-blob times the path to that one blob only. out_blob comes last.
    std::vector<std::string> extracted;
    if (!args.has_output_blob)
        for (size_t i = 0; i < outputs.size(); i++)
            if (out_blob != outputs[i])
                extracted.push_back(outputs[i]);
    extracted.push_back(out_blob);

    ncnn::Mat out;
    double first_ms = -1;
    // one inference exactly as runner.py times it: a fresh extractor, input, extract each blob
#define INFER()                                                                                        \
    do                                                                                                 \
    {                                                                                                  \
        ncnn::Extractor ex = net.create_extractor();                                                   \
        ex.input(in_blob.c_str(), mat_in);                                                             \
        for (size_t k = 0; k < extracted.size(); k++)                                                  \
        {                                                                                              \
            int ret = ex.extract(extracted[k].c_str(), out);                                           \
            if (ret != 0)                                                                              \
                throw fail("ValueError", "extract('%s') failed with code %d", extracted[k].c_str(), ret); \
        }                                                                                              \
    } while (0)

    for (int w = 0; w < args.warmup && !g_signal; w++)
    {
        double b = now_s();
        INFER();
        if (first_ms < 0)
            first_ms = (now_s() - b) * 1000.0;
    }
    if (g_signal)
    {
        Json j;
        j.raw("{").key("type").str("stats").key("count").integer(0).key("samples_ms").raw("[]");
        j.key("partial").boolean(true).key("signal").integer(g_signal).raw("}");
        emit(j.s);
        return 128 + g_signal;
    }

    std::vector<double> samples;
#if RUNNER_LAYERS
    g_record = args.layers;
#endif
    double t0 = now_s();
    for (int i = 0;; i++)
    {
        if (g_signal)
            break;
        if (args.has_duration)
        {
            if (i > 0 && now_s() - t0 >= args.duration)
                break;
        }
        else if (i >= args.iterations)
            break;
        double b = now_s();
        INFER();
        double ms = (now_s() - b) * 1000.0;
        if (first_ms < 0)
            first_ms = ms;
        samples.push_back(ms);
        Json j;
        j.raw("{").key("type").str("iter").key("i").integer(i).key("ms").num(ms).key("t").num(now_s() - t0).raw("}");
        emit(j.s);
    }
#undef INFER
#if RUNNER_LAYERS
    g_record = false;
#endif
    int partial_signal = g_signal;

    if (args.return_output && !samples.empty() && !partial_signal)
    {
        // contiguous float32, outermost first (like memoryview(mat) in the Python runner)
        std::vector<float> flat;
        size_t plane = (size_t)out.w * out.h * out.d;
        for (int q = 0; q < out.c; q++)
        {
            const float* p = out.channel(q);
            flat.insert(flat.end(), p, p + plane);
        }
        Json j;
        j.raw("{").key("type").str("output").key("blob").str(out_blob).key("shape").raw("[");
        if (out.dims == 1)
            j.integer(out.w);
        else if (out.dims == 2)
            j.integer(out.h).raw(",").integer(out.w);
        else if (out.dims == 3)
            j.integer(out.c).raw(",").integer(out.h).raw(",").integer(out.w);
        else
            j.integer(out.c).raw(",").integer(out.d).raw(",").integer(out.h).raw(",").integer(out.w);
        j.raw("]").key("dims").integer(out.dims).key("w").integer(out.w).key("h").integer(out.h).key("c").integer(out.c);
        j.key("dtype").str("float32").key("data").str(base64((const unsigned char*)flat.data(), flat.size() * 4)).raw("}");
        emit(j.s);
    }
#if RUNNER_LAYERS
    if (args.layers)
    {
        Json j;
        j.raw("{").key("type").str("layers").key("layers").raw("[");
        for (size_t i = 0; i < g_layers.size(); i++)
        {
            j.sep().raw("{").key("index").integer((long long)i).key("name").str(g_layers[i].name);
            j.key("type").str(g_layers[i].type).key("ms").raw("[");
            for (size_t k = 0; k < g_layers[i].ms.size(); k++)
                j.sep().num(g_layers[i].ms[k]);
            j.raw("]}");
        }
        j.raw("]}");
        emit(j.s);
    }
#endif

    Json j;
    j.raw("{").key("type").str("stats");
    summarize(j, samples);
    j.key("samples_ms").raw("[");
    for (size_t i = 0; i < samples.size(); i++)
        j.sep().num(samples[i]);
    j.raw("]").key("partial").boolean(partial_signal != 0);
    long rss = peak_rss_kb();
    j.key("peak_rss_kb");
    if (rss >= 0)
        j.integer(rss);
    else
        j.null();
    j.key("load_ms").num(load_ms);
    j.key("first_inference_ms");
    if (first_ms >= 0)
        j.num(first_ms);
    else
        j.null();
    j.key("startup_ms").num((t_load - t_start) * 1000.0);
    j.key("input_blob").str(in_blob).key("output_blob").str(out_blob).key("extracted").raw("[");
    for (size_t i = 0; i < extracted.size(); i++)
        j.sep().str(extracted[i]);
    j.raw("]").key("shape").raw("[");
    for (size_t i = 0; i < shape.size(); i++)
        j.sep().integer(shape[i]);
    j.raw("]").key("wall_s").num(now_s() - t0);
    j.key("end_state").raw("{");
    volatile_state(j);
    j.raw("}");
    if (partial_signal)
        j.key("signal").integer(partial_signal);
    j.raw("}");
    emit(j.s);
    return partial_signal ? 128 + partial_signal : 0;
}

int main(int argc, char** argv)
{
    double t_start = now_s();
    signal(SIGPIPE, SIG_IGN);
    handle(SIGINT, on_signal);
    handle(SIGTERM, on_signal);
    handle(SIGHUP, on_signal);
    try
    {
        Args args = parse_args(argc, argv);
        if (args.lease > 0)
            hold_lease(args.lease);
        return run(args, t_start);
    }
    catch (const StdoutClosed&)
    {
        return 141;
    }
    catch (const RunError& err)
    {
        try
        {
            Json j;
            j.raw("{").key("type").str("error").key("error").str(err.message).raw("}");
            emit(j.s);
        }
        catch (const StdoutClosed&)
        {
        }
        return 2;
    }
    catch (const std::exception& err)
    {
        try
        {
            Json j;
            j.raw("{").key("type").str("error").key("error").str(std::string("RuntimeError: ") + err.what()).raw("}");
            emit(j.s);
        }
        catch (const StdoutClosed&)
        {
        }
        return 2;
    }
}
