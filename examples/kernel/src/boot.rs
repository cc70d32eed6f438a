//! PVH entry: from 32-bit protected mode (paging off, no stack, `.bss` not
//! zeroed, `%ebx` = physical address of `hvm_start_info`) to 64-bit Rust.
//!
//! 1. take the stack at the top of `.bss`, zero `.bss`, keep `%ebx`;
//! 2. identity-map 0-4 GiB with 2 MiB pages (PML4 -> one PDPT -> four PDs);
//! 3. enable PAE, long mode and no-execute in EFER, then paging and
//!    write-protect;
//! 4. load a 64-bit GDT, far-jump to 64-bit code, reload the data segments
//!    and the full stack pointer, and call `kernel_main(start_info)`.
//!
//! Application processors take steps 3 and 4 too, from a real-mode
//! trampoline (`smp.rs` starts them).

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                     /* name size: "Xen\0" */
    .long 8                     /* descriptor size: 8 bytes (QEMU 7.2 reads 8 for ELF64) */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi              /* start info; survives the rep stos below */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov $boot_stack_top, %esp
    mov %esi, boot_start_info

    /* PML4[0] -> PDPT */
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    /* PDPT[0..4] -> the four page directories */
    mov $boot_pd, %eax
    or $0x3, %eax
    xor %ecx, %ecx
1:  mov %eax, boot_pdpt(,%ecx,8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jne 1b
    /* 2048 2 MiB pages: present, writable, huge */
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, boot_pd(,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    mov $boot_pml4, %eax
    mov %eax, AP_CR3
    jmp enter_long_mode

    /* Application processors (smp.rs) arrive here from the trampoline, in
       32-bit protected mode with paging off, and take the same way to long
       mode, with the kernel's own page tables (AP_CR3, below 4 GiB, set by
       the boot CPU) and the stack and CPU number it left in AP_STACK and
       AP_INDEX. */
    .global ap_start32
ap_start32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    /* Both ways, from here: the tables in AP_CR3 (the boot CPU put its
       boot tables there), PAE, long mode and no-execute (the kernel's
       tables use NX), paging and write-protect, the 64-bit GDT. */
enter_long_mode:
    mov AP_CR3, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax              /* PAE */
    mov %eax, %cr4
    mov $0xC0000080, %ecx       /* EFER */
    rdmsr
    or $0x900, %eax             /* LME | NXE */
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax        /* PG | WP | PE */
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    xor %ebp, %ebp
    /* AP_STACK is 0 until the boot CPU starts another CPU. */
    cmpq $0, AP_STACK(%rip)
    jne 5f
    lea boot_stack_top(%rip), %rsp
    mov boot_start_info(%rip), %edi
    call kernel_main
3:  hlt
    jmp 3b
5:  mov AP_STACK(%rip), %rsp
    mov AP_INDEX(%rip), %rdi
    call ap_main
4:  hlt
    jmp 4b

    /* The real-mode trampoline, copied to AP_TRAMPOLINE (smp.rs) and
       entered there by a start-up IPI with CS = AP_TRAMPOLINE >> 4, IP = 0.
       It leaves that page before paging is on: the kernel's tables map low
       memory no-execute. */
    .set AP_TRAMPOLINE, 0x8000
    .section .rodata.ap_trampoline, "a"
    .code16
    .global ap_trampoline_start
    .global ap_trampoline_end
ap_trampoline_start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    lgdtl AP_TRAMPOLINE + (ap_trampoline_gdtr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax                 /* PE */
    mov %eax, %cr0
    ljmpl $0x18, $ap_start32
    .balign 8
ap_trampoline_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
ap_trampoline_end:
    .code64

    .section .data
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: data */
    .quad 0x00cf9a000000ffff    /* 0x18: 32-bit code (application processors) */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
boot_start_info:
    .long 0

    .section .bss
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
boot_stack:
    .skip 256 * 1024
boot_stack_top:
    .text
    "#,
    options(att_syntax)
);
