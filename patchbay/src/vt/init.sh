# Guest init of the patchbay virtual-time runner (body; `script.rs` prepends `#!/bin/sh` and
# the per-run variables VT_FSTAB, VT_RESULTS, VT_CWD, VT_PATH, VT_ARGV0, VT_UPTIME, VT_MOUNT,
# VT_NOSUID, VT_ROOT, VT_KEEP and the functions vt_expose and vt_run).
# Runs as PID 1 of the UML guest, from the host's read-only root (hostfs), with /bin/sh.
# Reports go to the console (lines starting with PATCHBAY-VT) and to files in $VT_RESULTS.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
# Profiling marks (console lines the host timestamps; `echo` is a builtin, no exec).
echo "PATCHBAY-VT-MARK init"

vt_off() {
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    echo "PATCHBAY-VT-MARK off"
    sync
    echo o > /proc/sysrq-trigger
    # sysrq 'o' powers off asynchronously; PID 1 must not exit meanwhile.
    while :; do sleep 1; done
}

vt_die() {
    echo "PATCHBAY-VT-SETUP-ERROR: $*"
    if [ -d /proc/self ]; then vt_off; fi
    exit 1
}

# An unprivileged runner: host root's files appear owned by uid 65534 through hostfs, so a
# setuid-root binary (the host's `mount` among them) would drop the guest's root to 65534.
# The root becomes nosuid (keeping ro), with the runner's non-setuid copy of `mount` (in the
# run dir, which the /tmp tmpfs of the fstab hides: hence before `mount -a`).
if [ "$VT_NOSUID" = 1 ]; then
    "$VT_MOUNT" -n -t proc -o nosuid,nodev,noexec proc /proc || vt_die "mount proc on /proc"
    "$VT_MOUNT" -n -o remount,bind,ro,nosuid / || vt_die "remount / nosuid"
fi

# The workload's root: the host tree through an overlay whose upper layer is a tmpfs in guest
# memory, so the command may write anywhere (its target dir, the package dir, $HOME) and every
# write vanishes at power-off; the host tree itself stays read-only. The tmpfs goes on the
# host's /run (a mount point that exists), the overlay's old root to the new root's /run,
# where the fstab's tmpfs then takes its place. PID 1 keeps the tmpfs open on fd 9 (for
# VT_KEEP: the upper layer is copied out after the command); the command does not inherit it.
vt_overlay() {
    vt_ovl_opts=lowerdir=/,upperdir=/run/upper,workdir=/run/work
    [ "$VT_NOSUID" = 1 ] && vt_ovl_opts=$vt_ovl_opts,nosuid
    "$VT_MOUNT" -n -t tmpfs -o mode=0755 tmpfs /run || return 1
    if ! mkdir /run/upper /run/work /run/root ||
        ! "$VT_MOUNT" -n -t overlay -o "$vt_ovl_opts" overlay /run/root; then
        umount -n /run
        return 1
    fi
    exec 9< /run
    cd /run/root || vt_die "cd into the overlay root"
    pivot_root . run || vt_die "pivot_root into the overlay root"
    cd / || vt_die "cd / in the overlay root"
    umount -n -l /run || vt_die "unmount the old root"
}
if [ "$VT_ROOT" = overlay ] && ! vt_overlay; then
    # A kernel without CONFIG_OVERLAY_FS (built before it was in xtask/uml.config).
    echo "PATCHBAY-VT-MARK no-overlay"
    VT_ROOT=ro
fi
mount -n -a -T "$VT_FSTAB" || vt_die "mount -a -T $VT_FSTAB (see the mount error above)"
echo "PATCHBAY-VT-MARK fstab"
vt_expose
echo "PATCHBAY-VT-MARK expose"
# Normally in the fstab; after the exposed entries when one of them holds it.
if [ "$VT_RESULTS_IN_FSTAB" = 0 ]; then
    [ -d "$VT_RESULTS" ] || mkdir -p "$VT_RESULTS" || vt_die "mkdir $VT_RESULTS"
    mount -n -t hostfs -o "$VT_RESULTS" hostfs "$VT_RESULTS" || vt_die "mount hostfs $VT_RESULTS (writable results dir)"
fi
# `ip link set lo up` without the exec: the netdev's sysfs flags (dev_change_flags).
read -r vt_lo < /sys/class/net/lo/flags || vt_die "reading /sys/class/net/lo/flags"
echo $((vt_lo | 1)) > /sys/class/net/lo/flags || vt_die "bringing lo up"
echo "PATCHBAY-VT-MARK lo"
# The host's name is not the guest's business (and would differ between machines).
echo patchbay-vt > /proc/sys/kernel/hostname || vt_die "setting the hostname"

# The runner's open-file limits (a test building hundreds of namespaces needs more than the
# guest kernel's default 1024).
ulimit -H -n "$VT_NOFILE_HARD" 2>/dev/null || vt_die "ulimit -H -n $VT_NOFILE_HARD"
ulimit -S -n "$VT_NOFILE_SOFT" 2>/dev/null || vt_die "ulimit -S -n $VT_NOFILE_SOFT"

# A host whose /etc/resolv.conf or /etc/hosts links into /run (systemd-resolved) would leave
# them dangling under the guest's fresh /run, and a lab that bind-mounts its own over them
# (upstream patchbay's DNS) would fail: over the overlay they become empty files (the guest has
# no network to resolve on anyway).
if [ "$VT_ROOT" = overlay ]; then
    for vt_f in /etc/resolv.conf /etc/hosts; do
        if [ -L "$vt_f" ] && [ ! -e "$vt_f" ]; then
            rm -f "$vt_f" && : > "$vt_f" || vt_die "replace the dangling symlink $vt_f"
        fi
    done
fi

PATH=$VT_PATH
if ! cd "$VT_CWD"; then
    echo "cwd" > "$VT_RESULTS/error"
    vt_off
fi
if ! command -v "$VT_ARGV0" > /dev/null 2>&1; then
    echo "not-found" > "$VT_RESULTS/error"
    vt_off
fi

# A real machine has been up for minutes when tests run; programs that treat a small
# CLOCK_MONOTONIC as "unset" (iputils ping paces nothing then) must not see a fresh boot.
# Under time-travel=inf-cpu this sleep is one jump of the guest clock: no wall time.
if [ "$VT_UPTIME" != 0 ]; then
    sleep "$VT_UPTIME" || vt_die "sleep $VT_UPTIME (virtual uptime before the command)"
fi
echo "PATCHBAY-VT-MARK uptime"

# The monotonic clock in ns, read without an exec: the third line of /proc/timer_list is
# "now at N nsecs".
vt_now() {
    { read -r vt_l; read -r vt_l; read -r vt_l; } < /proc/timer_list
    vt_l=${vt_l#now at }
    vt_now=${vt_l% nsecs}
}

read -r vt_up0 vt_idle < /proc/uptime
echo "PATCHBAY-VT: command-start"
vt_now
vt_ns0=$vt_now
vt_run 9<&- < /dev/null > "$VT_RESULTS/stdout" 2> "$VT_RESULTS/stderr"
vt_rc=$?
vt_now
vt_ns1=$vt_now
read -r vt_up1 vt_idle < /proc/uptime
echo "PATCHBAY-VT: command-end $vt_rc"
# A failed command may have needed user namespaces (programs written for upstream patchbay
# enter one first, `init_userns`); a kernel without them is worth a warning then.
if [ "$vt_rc" != 0 ]; then
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    unshare -U true 2> /dev/null || echo "PATCHBAY-VT-MARK no-userns"
fi

# What the command wrote on the host tree (the overlay's upper layer, deletions left out),
# copied to the host directory VT_KEEP at the same paths below it.
vt_keep() {
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    { [ -d "$VT_KEEP" ] || mkdir -p "$VT_KEEP"; } &&
        mount -n -t hostfs -o "$VT_KEEP" hostfs "$VT_KEEP" &&
        (cd -P /proc/self/fd/9/upper &&
            find . ! -type c ! -type d -exec cp -dp --parents -t "$VT_KEEP" {} +)
}
if [ -n "$VT_KEEP" ]; then
    if [ "$VT_ROOT" != overlay ]; then
        echo "the guest has no writable overlay (read-only root, or a kernel without CONFIG_OVERLAY_FS)" > "$VT_RESULTS/keep_error"
    elif ! vt_keep_err=$(vt_keep 2>&1); then
        echo "$vt_keep_err" > "$VT_RESULTS/keep_error"
    fi
fi
echo "$vt_up0 $vt_up1" > "$VT_RESULTS/uptime"
echo "$vt_ns0 $vt_ns1" > "$VT_RESULTS/clock"
echo "$vt_rc" > "$VT_RESULTS/exit_code"
vt_off
