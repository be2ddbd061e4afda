//! Programming a VF's PF side with rollback, and restoring it.

use std::time::Duration;

use super::programmer::VfProgrammer;
use super::settings::{VfHwState, VfOp, VfSettings};
use crate::error::Error;
use crate::failpoint;
use crate::sysfs::VfRef;
use crate::undo::Undo;

/// PF drivers apply a VF MAC asynchronously (i40e, mlx5): read it back until
/// it shows, as sriov-cni does (20 x 100 ms).
const MAC_VERIFY_TRIES: u32 = 20;
const MAC_VERIFY_PAUSE: Duration = Duration::from_millis(100);

fn write_verified(prog: &dyn VfProgrammer, vf: &VfRef, op: VfOp) -> Result<(), Error> {
    prog.write(vf, op)?;
    // All-zero clears an admin MAC; the PF then reports whatever MAC the VF
    // has of its own (igb), so there is nothing to read back.
    if let VfOp::Mac(m) = op
        && !m.is_zero()
    {
        for attempt in 1..=MAC_VERIFY_TRIES {
            let now = prog.read(vf)?;
            if op.is_reflected_in(&now) {
                return Ok(());
            }
            if attempt < MAC_VERIFY_TRIES {
                std::thread::sleep(MAC_VERIFY_PAUSE);
            } else {
                return Err(Error::Device {
                    device: vf.pci.to_string(),
                    reason: format!(
                        "PF {} accepted {op} for VF {} but still reports mac {} after {} tries",
                        vf.pf.name, vf.index, now.mac, MAC_VERIFY_TRIES
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Applies `want` in sriov-cni's order. Each write that succeeds pushes the
/// write restoring `orig` onto `undo`, so a refusal part-way (a driver without
/// link_state support, say) leaves the VF exactly as it was.
pub fn program<'a>(
    prog: &'a dyn VfProgrammer,
    vf: &'a VfRef,
    want: &VfSettings,
    orig: &VfHwState,
    undo: &mut Undo<'a>,
) -> Result<(), Error> {
    for op in want.add_order() {
        // The write's own error already says "set VF <n> <op> on PF <pf>".
        write_verified(prog, vf, op).map_err(|e| e.step(op.key()))?;
        let restore = op.value_in(orig);
        undo.push(format!("restore VF {} {restore}", vf.index), move || {
            write_verified(prog, vf, restore)
        });
        failpoint::hit(op.failpoint_after())?;
    }
    Ok(())
}

/// Restores every attribute `applied` changed, in DEL order. Continues past
/// failures and returns them all, so one stubborn attribute never leaves the
/// others unrestored.
pub fn restore(
    prog: &dyn VfProgrammer,
    vf: &VfRef,
    applied: &VfSettings,
    orig: &VfHwState,
) -> Vec<Error> {
    applied
        .restore_order(orig)
        .into_iter()
        .filter_map(|op| {
            write_verified(prog, vf, op)
                .map_err(|e| e.step(format!("restore {}", op.key())))
                .err()
        })
        .collect()
}
