//! Prints the CRD manifest generated from the types: `make crd` writes it to
//! deploy/crds, which `vcfm crd` prints and tests compare with this output.

use std::io::Write;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yaml = vcfm_api::crd_yaml()?;
    std::io::stdout().lock().write_all(yaml.as_bytes())?;
    Ok(())
}
