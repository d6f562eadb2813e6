/* What the VM charges for the operations a registrar's start and download are made of:
 * a system call, a first write to a fresh page, and the same pages mapped in one
 * madvise(MADV_POPULATE_WRITE). Built and run by benches/vm-costs.sh; prints
 * `NAME VALUE UNIT` lines. A benchmark: it asserts nothing. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

int main(void) {
    enum { CALLS = 20000, PAGES = 2000 };
    size_t len = (size_t)PAGES * 4096;
    double t = now_us();
    for (int i = 0; i < CALLS; i++)
        getppid();
    printf("syscall_getppid %.2f us\n", (now_us() - t) / CALLS);
    t = now_us();
    for (int i = 0; i < CALLS; i++)
        now_us();
    printf("clock_gettime %.2f us\n", (now_us() - t) / CALLS);

    char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED)
        return 1;
    t = now_us();
    for (size_t i = 0; i < len; i += 4096)
        a[i] = 1;
    printf("first_write_fault %.2f us_per_page\n", (now_us() - t) / PAGES);
    t = now_us();
    int rc = madvise(b, len, MADV_POPULATE_WRITE);
    printf("populate_write %.2f us_per_page%s\n", (now_us() - t) / PAGES, rc ? " (refused)" : "");
    t = now_us();
    for (size_t i = 0; i < len; i += 4096)
        b[i] = 1;
    printf("write_after_populate %.2f us_per_page\n", (now_us() - t) / PAGES);
    return 0;
}
