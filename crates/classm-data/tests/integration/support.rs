//! Test helpers: the shared data folder, the fixture dataset, files with known defects.

use std::path::{Path, PathBuf};

use classm_data::{Dataset, SourceOptions};

/// The shared data folder (`$CLASSM_SHARED` or `../shared` beside the repository), if present.
pub fn shared() -> Option<PathBuf> {
    let p = std::env::var_os("CLASSM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    p.join("data/ebhi-seg/MANIFEST.tsv").is_file().then_some(p)
}

/// Says that a test is skipped, on the real stderr (libtest captures `eprintln!`).
pub fn skip() {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: ../shared (data) is absent; set CLASSM_SHARED to run it"
    );
}

/// `shared()` or a skip message and return.
#[macro_export]
macro_rules! require_shared {
    () => {
        match $crate::support::shared() {
            Some(p) => p,
            None => {
                $crate::support::skip();
                return;
            }
        }
    };
}

/// The repository's fixture dataset (22 EBHI patches, 6 classes, 18 cases).
pub fn mini_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/ebhi-mini/MANIFEST.tsv")
}

/// The fixture dataset, read through its manifest (group = case_id).
pub fn mini() -> Dataset {
    Dataset::open(&mini_manifest(), &SourceOptions::default()).expect("fixture manifest")
}

/// Writes an RGB8 PNG.
pub fn write_png(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// Copies the fixture patches of one class into `dir/<class>/`.
pub fn copy_class(dir: &Path, class: &str) {
    let src = mini_manifest().parent().unwrap().join(class);
    std::fs::create_dir_all(dir.join(class)).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(class).join(p.file_name().unwrap())).unwrap();
    }
}
