"""CGGMP21 threshold-ECDSA protocols as sans-IO state machines: a party consumes messages and
returns messages; no sockets, clocks or storage inside.  `base` is the round engine (collection,
echo broadcast, joint session ids, session contexts, blame) and `simulate` runs parties in
memory.  One protocol per module: `keygen` (t-of-n DKG), `aux_info` (Paillier–Blum +
ring-Pedersen with Πmod, Πprm, Πfac), `presign`, `presign_identify` (names who lied about δ_j or
S_j when presign's output check fails), `sign` (one round, and full interactive signing),
`reshare` (re-sharing to a new committee; key refresh as its special case); `hd` derives BIP32
child keys; `flow` runs a whole wallet in one process.  See docs/protocol.md."""
