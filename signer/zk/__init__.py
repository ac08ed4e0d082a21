"""CGGMP21 zero-knowledge proofs, one per module: Πsch (`sch`), Πenc (`enc`), Πaff-g (`aff_g`),
Πlog* (`log_star`), Πmod (`mod`), Πprm (`prm`), Πfac (`fac`), Πmul and Πmul* (`mul`), Πdec and
its group form (`dec`, used only to identify a cheater after a failed presign).  Each module
has `prove` and `verify`; `verify` raises `signer.errors.ProofRejected` naming the failed check
and the prover, and implements every check of attacks.md §2 without any option to skip one."""
