/*
 * crab-xattr: lists the extended attributes of many paths in one short process (fssnap capture
 * asks for every changed entry of an overlay upper, trusted.overlay.* included, which needs root).
 *
 * stdin: paths, each terminated by NUL. Symlinks are not followed; a path that does not exist
 * is skipped. stdout, for each attribute of each path, in input order and by name (byte order):
 * "<index of the path>\0<name>\0<value as lowercase hex>\0". Exit 1 on any other error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

static void die(const char *what, const char *path) {
  fprintf(stderr, "crab-xattr: %s %s: %s\n", what, path, strerror(errno));
  exit(1);
}

static int cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int main(void) {
  size_t cap = 0;
  char *path = NULL;
  ssize_t n;
  unsigned long idx = 0;
  char *names = NULL, *val = NULL;
  size_t names_cap = 0, val_cap = 0;
  static const char hex[] = "0123456789abcdef";
  while ((n = getdelim(&path, &cap, '\0', stdin)) > 0) {
    if (path[n - 1] != '\0') { fprintf(stderr, "crab-xattr: unterminated path\n"); return 1; }
    ssize_t len;
    for (;;) {
      ssize_t need = llistxattr(path, NULL, 0);
      if (need < 0 && errno == ENOENT) { len = -1; break; }
      if (need < 0) die("llistxattr", path);
      if (need == 0) { len = 0; break; }
      if ((size_t)need > names_cap) {
        names_cap = (size_t)need;
        names = realloc(names, names_cap);
        if (!names) die("realloc", path);
      }
      len = llistxattr(path, names, names_cap);
      if (len >= 0) break;
      if (errno == ENOENT) { len = -1; break; }
      if (errno != ERANGE) die("llistxattr", path); /* ERANGE: grew meanwhile, ask again */
    }
    if (len > 0) {
      size_t count = 0;
      for (ssize_t i = 0; i < len; i++) if (names[i] == '\0') count++;
      const char **list = malloc(count * sizeof *list);
      if (!list) die("malloc", path);
      size_t k = 0;
      for (ssize_t i = 0; i < len; i += (ssize_t)strlen(names + i) + 1) list[k++] = names + i;
      qsort(list, count, sizeof *list, cmp);
      for (size_t j = 0; j < count; j++) {
        ssize_t vl;
        for (;;) {
          ssize_t need = lgetxattr(path, list[j], NULL, 0);
          if (need < 0) die("lgetxattr", path);
          if ((size_t)need + 1 > val_cap) {
            val_cap = (size_t)need + 1;
            val = realloc(val, val_cap);
            if (!val) die("realloc", path);
          }
          vl = lgetxattr(path, list[j], val, val_cap);
          if (vl >= 0) break;
          if (errno != ERANGE) die("lgetxattr", path); /* ERANGE: grew meanwhile, ask again */
        }
        printf("%lu%c%s%c", idx, 0, list[j], 0);
        for (ssize_t b = 0; b < vl; b++) {
          putchar(hex[(unsigned char)val[b] >> 4]);
          putchar(hex[(unsigned char)val[b] & 15]);
        }
        putchar(0);
      }
      free(list);
    }
    idx++;
  }
  if (ferror(stdin)) die("read", "stdin");
  if (fflush(stdout) != 0) die("write", "stdout");
  return 0;
}
