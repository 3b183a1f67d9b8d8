# Sourced by the benchmark scripts: the processes a script starts, stopped by PID, last started first (a worker or a
# materializer commits to the broker before the broker goes).
# usage: started+=($!) after starting each one; stop_started in the script's EXIT trap.
started=()
stop_started() {
  for ((i = ${#started[@]} - 1; i >= 0; i--)); do
    kill -TERM "${started[i]}" 2>/dev/null || true
    wait "${started[i]}" 2>/dev/null || true
  done
}
