/* Load generator for the inspector benchmarks: crab-inspector-load MODE N [DIR]
 *   write  : N one-byte writes to DIR/load.dat
 *   create : N times open(O_CREAT) + close + unlink of distinct names in DIR
 *   getpid : N getpid() syscalls (overhead of the tracepoints on any syscall)
 * Prints {"mode":…,"n":…,"ns":…}. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
  if (argc < 3)
    return 2;
  const char *mode = argv[1];
  long n = atol(argv[2]);
  const char *dir = argc > 3 ? argv[3] : ".";
  char p[4096];
  long long t0 = now();
  if (strcmp(mode, "write") == 0) {
    snprintf(p, sizeof(p), "%s/load.dat", dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
      return 1;
    t0 = now();
    for (long i = 0; i < n; i++)
      if (write(fd, "x", 1) != 1)
        return 1;
    close(fd);
  } else if (strcmp(mode, "create") == 0) {
    for (long i = 0; i < n; i++) {
      snprintf(p, sizeof(p), "%s/c%ld", dir, i);
      int fd = open(p, O_WRONLY | O_CREAT, 0644);
      if (fd < 0)
        return 1;
      close(fd);
      unlink(p);
    }
  } else if (strcmp(mode, "getpid") == 0) {
    for (long i = 0; i < n; i++)
      syscall(SYS_getpid);
  } else {
    return 2;
  }
  long long dt = now() - t0;
  printf("{\"mode\":\"%s\",\"n\":%ld,\"ns\":%lld}\n", mode, n, dt);
  return 0;
}
