"""Emulated ARM boards: Debian bookworm sysroots, each board's own ARM sshd under qemu-user in its own
network/mount/pid/uts namespaces, an optional userspace link shaper, and targets/sim.yaml.

Public API (deployer.sim.manager): sim_up, sim_down, sim_down_all, sim_status.
Modules: sysroot (build + SSH prep), host (root, packages, binfmt), net (netns, veths, routes),
board + boardinit (overlay, mounts, sshd as PID 1), shaper + linkspec (--link), state (state.json),
targetsfile (sim.yaml, sim_known_hosts), keys (client key), profiles (CPU/model/cpuinfo), procs.
"""
