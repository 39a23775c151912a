"""What kind of board each architecture emulates: qemu CPU model, model string, /proc/cpuinfo.

ncnn chooses kernels from the CPU it sees, so QEMU_CPU must be the board's real core (qemu's
default `max` advertises fp16 arithmetic and changes the numbers). qemu-user passes the host's
x86 /proc/cpuinfo through, so boards get a Pi-like one bind-mounted over it.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_COUNT = 32            # emulated boards of one arch (qemu-user: each one a few hundred MB)
MAX_HOST_COUNT = 250      # light boards (--arch host): one host sshd each, no emulation

# ARM "CPU part" numbers as the kernel prints them
CPU_PARTS = {"cortex-a7": 0xC07, "cortex-a15": 0xC0F, "cortex-a53": 0xD03, "cortex-a57": 0xD07,
             "cortex-a72": 0xD08}


@dataclass(frozen=True)
class BoardProfile:
    arch: str            # Debian architecture of the userland
    qemu_cpu: str
    model: str           # /sys/firmware/devicetree/base/model and cpuinfo "Model"
    revision: str        # Raspberry Pi revision code
    cores: int = 4

    def cpuinfo(self, serial: int) -> str:
        part = CPU_PARTS[self.qemu_cpu]
        blocks = []
        for i in range(self.cores):
            if self.arch == "armhf":
                blocks.append(
                    f"processor\t: {i}\nmodel name\t: ARMv7 Processor rev 3 (v7l)\nBogoMIPS\t: 108.00\n"
                    "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae "
                    "evtstrm\nCPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\n"
                    f"CPU part\t: 0x{part:03x}\nCPU revision\t: 3\n")
            else:
                blocks.append(
                    f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
                    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                    f"CPU part\t: 0x{part:03x}\nCPU revision\t: 3\n")
        tail = f"Revision\t: {self.revision}\nSerial\t\t: 10000000{serial:08x}\nModel\t\t: {self.model}\n"
        return "\n".join(blocks) + "\n" + tail


PROFILES = {
    # Raspberry Pi 4 with 64-bit Raspberry Pi OS
    "arm64": BoardProfile("arm64", "cortex-a72", "Raspberry Pi 4 Model B Rev 1.4", "c03114"),
    # a 32-bit (armhf) userland; qemu-arm has no cortex-a72, so the core is a Cortex-A15 (ARMv7 + NEON)
    "armhf": BoardProfile("armhf", "cortex-a15", "Raspberry Pi 4 Model B Rev 1.4", "c03114"),
    # a light board for fleet scale: the host's own userland and sshd, no emulation (deployer.sim.hostboard)
    "host": BoardProfile("host", "host", "deployer light board (host userland)", ""),
}
