/**
 * @module The sandbox's init (pid 1): a bash loop that starts every process the host asks for.
 *
 * Why: processes made by `runc exec` are lost by CRIU (reparented outside init's tree) and
 * `runc exec` after a restore breaks the next restore (host-notes). So the host never execs into
 * a sandbox: it writes a request script to /run/crab/r/<rid>.sh and its id to the control FIFO;
 * init forks `bash <script>`. All stdio stays inside the sandbox (FIFOs and files), as CRIU needs.
 */

/** Directory inside the sandbox that holds Crab's control files. */
export const CONTROL_DIR = '/run/crab';
export const REQUEST_DIR = `${CONTROL_DIR}/r`;
export const SESSION_DIR = `${CONTROL_DIR}/s`;
export const CONTROL_FIFO = `${CONTROL_DIR}/ctl`;
export const READY_FILE = `${CONTROL_DIR}/ready`;

export const INIT_SCRIPT = `set +m
C=${CONTROL_DIR}
mkdir -p $C/r $C/s
[ -p $C/ctl ] || mkfifo -m 600 $C/ctl
exec 0</dev/null 1>/dev/null 2>&1 3<>$C/ctl
: > $C/ready
while :; do
  if IFS= read -r -u 3 rid; then
    case "$rid" in
      ''|*[!a-z0-9-]*) ;;
      *) bash --noprofile --norc $C/r/$rid.sh </dev/null >/dev/null 2>&1 & ;;
    esac
  fi
done`;
