//! Test helpers: locating `../shared`, reading images, reference JSON and `.npy` maps.

use std::path::{Path, PathBuf};

use classm_stain::{RgbView, StainMatrix};

/// The shared data folder (`$CLASSM_SHARED` or `../shared` beside the repository), if present.
pub fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("CLASSM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    p.join("reference/stain").is_dir().then_some(p)
}

/// Says that a test is skipped, on the real stderr: libtest captures `eprintln!`, not this.
/// libtest names each test's thread after the test.
pub fn skip(what: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or(what);
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: ../shared (reference data) is absent; set CLASSM_SHARED to run it"
    );
}

/// `shared()` or a skip message.
#[macro_export]
macro_rules! require_shared {
    () => {
        match $crate::support::shared() {
            Some(p) => p,
            None => {
                $crate::support::skip(module_path!());
                return;
            }
        }
    };
}

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// An RGB8 image read from disk.
pub struct Img {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Img {
    pub fn open(path: &Path) -> Img {
        let img = image::open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8();
        Img {
            width: img.width() as usize,
            height: img.height() as usize,
            data: img.into_raw(),
        }
    }

    pub fn view(&self) -> RgbView<'_> {
        RgbView::new(self.width, self.height, &self.data).expect("view")
    }
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&s).expect("json")
}

/// The 3x2 stain matrix of implementation `name` in a reference JSON, or `None` if it errored.
pub fn ref_matrix(j: &serde_json::Value, name: &str) -> Option<StainMatrix> {
    let m = j["implementations"][name]["stain_matrix_3x2"].as_array()?;
    let col = |c: usize| -> [f64; 3] { [0, 1, 2].map(|r| m[r][c].as_f64().expect("number")) };
    Some(StainMatrix {
        h: col(0),
        e: col(1),
    })
}

pub fn angle_deg(a: [f64; 3], b: [f64; 3]) -> f64 {
    let d = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let na = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
    let nb = (b[0] * b[0] + b[1] * b[1] + b[2] * b[2]).sqrt();
    (d / (na * nb)).clamp(-1.0, 1.0).acos().to_degrees()
}

/// Reads a little-endian float32 C-order `.npy` (version 1.0) file.
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not npy", path.display());
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).expect("header");
    assert!(header.contains("'<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_s = &header[header.find("'shape': (").expect("shape") + 10..];
    let shape: Vec<usize> = shape_s[..shape_s.find(')').expect(")")]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().expect("dim"))
        .collect();
    let data = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

/// ‖a − b‖ / ‖b‖ over the whole map.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        num += (x as f64 - y as f64).powi(2);
        den += (y as f64).powi(2);
    }
    (num / den).sqrt()
}
