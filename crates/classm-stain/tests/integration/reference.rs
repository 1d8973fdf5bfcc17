//! Correctness against the Python reference implementations in `../shared/reference/stain`.

use classm_stain::{Convention, EstimateOptions, PcaPixels, estimate};

use crate::support::{Img, angle_deg, read_json, ref_matrix};

#[test]
fn explore_tiles() {
    let shared = crate::require_shared!();
    let dir = shared.join("data/stain/tiles");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let img = Img::open(&p);
        let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
        let j = read_json(&shared.join(format!("reference/stain/tiles/{stem}.json")));
        let cs = ref_matrix(&j, "classm_style").unwrap();
        let ts = ref_matrix(&j, "torchstain_numpy").unwrap();
        let a = estimate(
            img.view(),
            &EstimateOptions::new(Convention::classm())
                .with_artefacts(classm_stain::Artefacts::none()),
        )
        .unwrap();
        let b = estimate(
            img.view(),
            &EstimateOptions::new(Convention::classm().with_pca_pixels(PcaPixels::All))
                .with_artefacts(classm_stain::Artefacts::none()),
        )
        .unwrap();
        let m = match estimate(
            img.view(),
            &EstimateOptions::new(Convention::macenko2009())
                .with_artefacts(classm_stain::Artefacts::none()),
        ) {
            Ok(m) => m,
            Err(e) => {
                println!("{stem} tissue {e}");
                continue;
            }
        };
        println!(
            "{stem:60} tissue {:.3}/{:.3}  all {:.4}/{:.4}  mac {:.3}/{:.3}",
            angle_deg(a.matrix.h, cs.h),
            angle_deg(a.matrix.e, cs.e),
            angle_deg(b.matrix.h, cs.h),
            angle_deg(b.matrix.e, cs.e),
            angle_deg(m.matrix.h, ts.h),
            angle_deg(m.matrix.e, ts.e)
        );
    }
}
