/* Makes one getpid syscall through the ABI named in argv[1] and prints what came back.
 *
 * tests/test_seccomp.py compiles this at test time and runs it under a loaded profile: "native"
 * must print the pid (the helper itself runs fine under the filter), while "i386" (int 0x80, the
 * ia32 compat entry) and "x32" (syscall with bit 30 set) must be killed with SIGSYS. getpid is
 * harmless whichever ABI serves it. x86_64 only.
 */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    long ret;

    if (argc != 2)
        return 2;
    if (strcmp(argv[1], "native") == 0) {
        __asm__ volatile("syscall" : "=a"(ret) : "a"(39L) : "rcx", "r11", "memory");
    } else if (strcmp(argv[1], "i386") == 0) {
        /* getpid is 20 in the i386 table; the kernel zeroes r8-r11 on int 0x80 from 64-bit code */
        __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "r8", "r9", "r10", "r11", "memory");
    } else if (strcmp(argv[1], "x32") == 0) {
        /* getpid is 39 in the x86_64 table; bit 30 selects the x32 ABI (ENOSYS if not built in) */
        __asm__ volatile("syscall" : "=a"(ret) : "a"(0x40000000L | 39L) : "rcx", "r11", "memory");
    } else {
        return 2;
    }
    printf("%ld\n", ret);
    return 0;
}
