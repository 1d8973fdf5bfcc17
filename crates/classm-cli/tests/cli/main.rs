//! End-to-end tests of the `classm` binary on the repository's fixture tile.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/stain/torchstain__source.png"
);
const REFERENCE_JSON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/stain/torchstain__source.reference.json"
);
const W: usize = 584;
const H: usize = 438;

/// Runs the binary in `dir` (no progress bar, default logging).
fn classm(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_classm"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run classm");
    eprintln!(
        "$ classm {}\n--- exit {:?}\n--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn vec3(v: &Value) -> [f64; 3] {
    let a = v.as_array().expect("array");
    assert_eq!(a.len(), 3, "{v}");
    [0, 1, 2].map(|i| a[i].as_f64().expect("number"))
}

fn norm(v: [f64; 3]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn angle_deg(a: [f64; 3], b: [f64; 3]) -> f64 {
    let d: f64 = (0..3).map(|i| a[i] * b[i]).sum();
    (d / (norm(a) * norm(b)))
        .clamp(-1.0, 1.0)
        .acos()
        .to_degrees()
}

/// Checks a stain estimate's matrix: finite unit columns, H and E well apart.
fn assert_unit_matrix(est: &Value) -> ([f64; 3], [f64; 3]) {
    let h = vec3(&est["matrix"]["h"]);
    let e = vec3(&est["matrix"]["e"]);
    for v in [h, e] {
        assert!(v.iter().all(|x| x.is_finite()));
        assert!(
            (norm(v) - 1.0).abs() < 1e-9,
            "column {v:?} is not unit length"
        );
    }
    assert!(angle_deg(h, e) > 20.0, "H {h:?} and E {e:?} too close");
    (h, e)
}

/// A parsed `.npy` file: shape and data.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "magic");
    assert_eq!(&bytes[6..8], &[1, 0], "version 1.0");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let data_start = 10 + hlen;
    assert_eq!(data_start % 64, 0, "data must start 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..data_start]).expect("ascii header");
    assert!(header.ends_with('\n'), "header ends with newline");
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let open = header.find("'shape': (").expect("shape") + "'shape': (".len();
    let close = open + header[open..].find(')').expect("shape end");
    let shape: Vec<usize> = header[open..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("dimension"))
        .collect();
    let n: usize = shape.iter().product();
    let data = &bytes[data_start..];
    assert_eq!(data.len(), 4 * n, "data length matches the shape");
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, values)
}

fn read_rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_rgb8()
}

/// Every file below `dir` (recursively).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// No temporary or hidden leftovers anywhere below `dir`.
fn assert_no_temporaries(dir: &Path) {
    for f in files(dir) {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp") && !name.starts_with('.'),
            "leftover temporary file {}",
            f.display()
        );
    }
}

/// A directory with the fixture (`good.png`), garbage bytes (`bad.png`) and an all-white PNG.
fn mixed_dir(root: &Path) -> PathBuf {
    let d = root.join("in");
    fs::create_dir(&d).expect("mkdir");
    fs::copy(FIXTURE, d.join("good.png")).expect("copy");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(d.join("bad.png"), garbage).expect("write");
    image::RgbImage::from_pixel(64, 64, image::Rgb([255, 255, 255]))
        .save(d.join("white.png"))
        .expect("save");
    d
}

#[test]
fn version_and_help() {
    let t = tempdir();
    let out = classm(t.path(), &["--version"]);
    assert_eq!(code(&out), 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = classm(t.path(), &["stain", "separate", "--help"]);
    assert_eq!(code(&out), 0);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--out-dir",
        "--output",
        "--stain-json",
        "--fallback",
        "--sampling",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

#[test]
fn fit_writes_unit_columns_matching_the_reference() {
    let t = tempdir();
    let out = classm(
        t.path(),
        &[
            "stain",
            "fit",
            FIXTURE,
            "--out",
            "reports/fit.json",
            "--target-out",
            "target.json",
        ],
    );
    assert_eq!(code(&out), 0);
    // The report's folder did not exist: it is created rather than losing the run.
    let j = read_json(&t.path().join("reports/fit.json"));
    assert_eq!(j["summary"]["total"], 1);
    assert_eq!(j["summary"]["succeeded"], 1);
    assert_eq!(j["summary"]["failed"], 0);
    let r = &j["results"][0];
    assert_eq!(r["path"], FIXTURE);
    assert_eq!(r["conversion"], "none");
    assert!(r.get("error").is_none());
    let est = &r["ok"];
    let (h, e) = assert_unit_matrix(est);
    // The classm convention reproduces the CLASS-M restatement of the reference fixture.
    let reference = read_json(Path::new(REFERENCE_JSON));
    let m = &reference["implementations"]["classm_style"]["stain_matrix_3x2"];
    let rh = [0, 1, 2].map(|i| m[i][0].as_f64().expect("number"));
    let re = [0, 1, 2].map(|i| m[i][1].as_f64().expect("number"));
    assert!(angle_deg(h, rh) < 0.05, "H {h:?} vs reference {rh:?}");
    assert!(angle_deg(e, re) < 0.05, "E {e:?} vs reference {re:?}");
    assert_eq!(est["convention"]["name"], "classm");
    assert_eq!(est["diagnostics"]["total_pixels"], W * H);
    assert!(est.get("fallback").is_none());
    let mc = &est["max_conc"];
    assert!(mc[0].as_f64().expect("h") > 0.1 && mc[1].as_f64().expect("e") > 0.1);

    let target = read_json(&t.path().join("target.json"));
    assert_eq!(target["format"], "classm-stain-target/1");
    assert_eq!(target["matrix"], est["matrix"]);
    assert_eq!(target["max_conc"], est["max_conc"]);

    // Without --out the report goes to standard output.
    let out = classm(
        t.path(),
        &["stain", "fit", FIXTURE, "--convention", "macenko2009"],
    );
    assert_eq!(code(&out), 0);
    let j: Value = serde_json::from_slice(&out.stdout).expect("json on stdout");
    assert_eq!(j["results"][0]["ok"]["convention"]["name"], "macenko2009");
    assert_unit_matrix(&j["results"][0]["ok"]);
    assert_no_temporaries(t.path());
}

#[test]
fn separate_model_input_and_concentrations_npy() {
    let t = tempdir();
    let out = classm(t.path(), &["stain", "separate", FIXTURE, "--out-dir", "mi"]);
    assert_eq!(code(&out), 0);
    let mut maxes = Vec::new();
    for stain in ["H", "E"] {
        let (shape, v) = read_npy(&t.path().join(format!("mi/torchstain__source.{stain}.npy")));
        assert_eq!(shape, vec![H, W]);
        assert!(
            v.iter().all(|x| (0.0..=1.0).contains(x)),
            "{stain} outside [0, 1]"
        );
        let max = v.iter().copied().fold(0f32, f32::max);
        assert!(max > 0.3, "{stain} map is nearly empty (max {max})");
        maxes.push(max);
    }
    let used = read_json(&t.path().join("mi/torchstain__source.stain.json"));
    assert_eq!(used["source"], "estimated");
    assert_unit_matrix(&used);
    assert!(used["diagnostics"]["kept_pixels"].as_u64().expect("kept") > 100_000);

    // Concentrations match the reference maps of the fixture.
    let out = classm(
        t.path(),
        &[
            "stain",
            "separate",
            FIXTURE,
            "-o",
            "conc",
            "--output",
            "concentrations",
        ],
    );
    assert_eq!(code(&out), 0);
    for stain in ["H", "E"] {
        let (shape, v) = read_npy(
            &t.path()
                .join(format!("conc/torchstain__source.{stain}.npy")),
        );
        let reference = Path::new(FIXTURE)
            .with_file_name(format!("torchstain__source.classm_style.{stain}.npy"));
        let (rshape, r) = read_npy(&reference);
        assert_eq!(shape, rshape);
        let worst = v
            .iter()
            .zip(&r)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 2e-3, "{stain} concentrations differ by {worst}");
    }
    assert_no_temporaries(t.path());
}

#[test]
fn separate_rgb_writes_pngs() {
    let t = tempdir();
    let out = classm(
        t.path(),
        &["stain", "separate", FIXTURE, "-o", "rgb", "--output", "rgb"],
    );
    assert_eq!(code(&out), 0);
    let src = read_rgb(Path::new(FIXTURE));
    for stain in ["H", "E"] {
        let img = read_rgb(&t.path().join(format!("rgb/torchstain__source.{stain}.png")));
        assert_eq!((img.width() as usize, img.height() as usize), (W, H));
        let dark = img
            .pixels()
            .filter(|p| p.0.iter().any(|&c| c < 200))
            .count();
        assert!(
            dark > W * H / 50,
            "{stain} rendering is almost blank ({dark} dark pixels)"
        );
        assert_ne!(img.as_raw(), src.as_raw());
    }
    // Hematoxylin is blue-purple: its rendering absorbs red and green more than blue.
    let h = read_rgb(&t.path().join("rgb/torchstain__source.H.png"));
    let sum = |c: usize| h.pixels().map(|p| u64::from(p.0[c])).sum::<u64>();
    assert!(sum(2) > sum(0) && sum(2) > sum(1));
    assert!(t.path().join("rgb/torchstain__source.stain.json").is_file());
    assert_no_temporaries(t.path());
}

#[test]
fn normalize_with_a_target_json_and_an_image() {
    let t = tempdir();
    let out = classm(
        t.path(),
        &[
            "stain",
            "fit",
            FIXTURE,
            "-o",
            "fit.json",
            "--target-out",
            "target.json",
        ],
    );
    assert_eq!(code(&out), 0);
    let src = read_rgb(Path::new(FIXTURE));
    for (target, dir) in [("target.json", "n1"), (FIXTURE, "n2"), ("fit.json", "n3")] {
        let out = classm(
            t.path(),
            &[
                "stain",
                "normalize",
                FIXTURE,
                "--target",
                target,
                "--out-dir",
                dir,
            ],
        );
        assert_eq!(code(&out), 0, "target {target}");
        let img = read_rgb(&t.path().join(dir).join("torchstain__source.png"));
        assert_eq!((img.width() as usize, img.height() as usize), (W, H));
        // Normalising a tile to its own stains changes it only a little.
        let mean = img
            .as_raw()
            .iter()
            .zip(src.as_raw())
            .map(|(&a, &b)| f64::from((i16::from(a) - i16::from(b)).abs()))
            .sum::<f64>()
            / (3 * W * H) as f64;
        assert!(
            mean < 10.0,
            "self-normalisation moved pixels by {mean} on average"
        );
    }
    let a = fs::read(t.path().join("n1/torchstain__source.png")).expect("n1");
    let b = fs::read(t.path().join("n2/torchstain__source.png")).expect("n2");
    assert_eq!(a, b, "a target JSON and the image it was fitted on agree");

    // Another target really changes the colours.
    let mut target = read_json(&t.path().join("target.json"));
    target["max_conc"][1] = Value::from(target["max_conc"][1].as_f64().expect("e") * 2.0);
    fs::write(t.path().join("pink.json"), target.to_string()).expect("write");
    let out = classm(
        t.path(),
        &["stain", "normalize", FIXTURE, "-t", "pink.json", "-o", "n4"],
    );
    assert_eq!(code(&out), 0);
    let pink = read_rgb(&t.path().join("n4/torchstain__source.png"));
    let green = |img: &image::RgbImage| img.pixels().map(|p| u64::from(p.0[1])).sum::<u64>();
    assert!(green(&pink) < green(&read_rgb(&t.path().join("n1/torchstain__source.png"))));

    // A target fitted with another convention is refused as a usage error.
    let out = classm(
        t.path(),
        &[
            "stain",
            "normalize",
            FIXTURE,
            "-t",
            "target.json",
            "-o",
            "n5",
            "--convention",
            "macenko2009",
        ],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("convention"));
    assert_no_temporaries(t.path());
}

#[test]
fn a_directory_with_failures_reports_them_and_exits_1() {
    let t = tempdir();
    let d = mixed_dir(t.path());
    let out = classm(
        t.path(),
        &[
            "stain",
            "separate",
            "in",
            "--out-dir",
            "out",
            "--report",
            "report.json",
        ],
    );
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    let line = |name: &str| {
        err.lines()
            .find(|l| l.starts_with("failed:") && l.contains(name))
            .unwrap_or_else(|| panic!("no failure line for {name}"))
            .to_owned()
    };
    assert!(line("bad.png").contains("[decode]"), "{}", line("bad.png"));
    assert!(
        line("white.png").contains("[empty_tissue]"),
        "{}",
        line("white.png")
    );
    assert!(
        err.contains("separate: 3 files: 1 succeeded, 2 failed"),
        "{err}"
    );

    let out_files: Vec<String> = files(&t.path().join("out"))
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(out_files, ["good.E.npy", "good.H.npy", "good.stain.json"]);
    let (shape, _) = read_npy(&t.path().join("out/good.H.npy"));
    assert_eq!(shape, vec![H, W]);
    assert_no_temporaries(t.path());
    // The inputs are untouched.
    assert_eq!(files(&d).len(), 3);

    let report = read_json(&t.path().join("report.json"));
    let results = report["results"].as_array().expect("results");
    let by_name = |n: &str| {
        results
            .iter()
            .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with(n)))
            .unwrap_or_else(|| panic!("{n} missing from the report"))
    };
    assert_eq!(by_name("bad.png")["error"]["kind"], "decode");
    assert!(
        by_name("bad.png")["error"]["message"]
            .as_str()
            .expect("message")
            .contains("bad.png")
    );
    assert_eq!(by_name("white.png")["error"]["kind"], "empty_tissue");
    assert_eq!(by_name("good.png")["source"], "estimated");
    assert_eq!(
        by_name("good.png")["outputs"]
            .as_array()
            .expect("outputs")
            .len(),
        3
    );
    assert_eq!(report["summary"]["failed"], 2);
    assert_eq!(report["summary"]["succeeded"], 1);

    // fit reports the same failures in its JSON.
    let out = classm(t.path(), &["stain", "fit", "in", "-o", "fit.json"]);
    assert_eq!(code(&out), 1);
    let fit = read_json(&t.path().join("fit.json"));
    let kinds: Vec<&str> = fit["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["error"]["kind"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(kinds, ["decode", "ok", "empty_tissue"], "sorted by path");
}

#[test]
fn fallback_ruifrok_rescues_the_white_image() {
    let t = tempdir();
    mixed_dir(t.path());
    let out = classm(
        t.path(),
        &[
            "stain",
            "separate",
            "in",
            "-o",
            "out",
            "--fallback",
            "ruifrok",
        ],
    );
    // bad.png still fails.
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(
        err.contains("separate: 3 files: 2 succeeded (1 fell back to ruifrok), 1 failed"),
        "{err}"
    );
    let used = read_json(&t.path().join("out/white.stain.json"));
    assert_eq!(used["source"], "fallback");
    assert!(
        used["fallback"]
            .as_str()
            .expect("fallback reason")
            .contains("empty_tissue")
    );
    let (h, e) = assert_unit_matrix(&used);
    assert!(
        angle_deg(h, [0.65, 0.70, 0.29]) < 0.1,
        "{h:?} is not Ruifrok's H"
    );
    assert!(
        angle_deg(e, [0.07, 0.99, 0.11]) < 0.1,
        "{e:?} is not Ruifrok's E"
    );
    assert_eq!(used["max_conc"], serde_json::json!([1.0, 1.0]));
    // White glass holds no stain.
    let (shape, v) = read_npy(&t.path().join("out/white.H.npy"));
    assert_eq!(shape, vec![64, 64]);
    assert!(v.iter().all(|&x| x == 0.0));
    // The good image is unaffected by the option.
    assert_eq!(
        read_json(&t.path().join("out/good.stain.json"))["source"],
        "estimated"
    );
    assert_no_temporaries(t.path());

    // Without the corrupt file every image succeeds: exit 0.
    fs::remove_file(t.path().join("in/bad.png")).expect("rm");
    let out = classm(
        t.path(),
        &[
            "stain",
            "fit",
            "in",
            "-o",
            "fit.json",
            "--fallback",
            "ruifrok",
            "--fallback-max-conc",
            "0.8,0.4",
        ],
    );
    assert_eq!(code(&out), 0);
    let fit = read_json(&t.path().join("fit.json"));
    assert_eq!(fit["summary"]["fell_back"], 1);
    assert_eq!(fit["results"][1]["source"], "fallback");
    assert_eq!(
        fit["results"][1]["ok"]["max_conc"],
        serde_json::json!([0.8, 0.4])
    );
}

#[test]
fn slide_fit_pools_three_crops() {
    let t = tempdir();
    let crops = t.path().join("crops");
    fs::create_dir(&crops).expect("mkdir");
    let src = read_rgb(Path::new(FIXTURE));
    let (w, h) = (src.width() / 2, src.height() / 2);
    for (i, (x, y)) in [(0, 0), (w, 0), (0, h)].into_iter().enumerate() {
        image::imageops::crop_imm(&src, x, y, w, h)
            .to_image()
            .save(crops.join(format!("crop{i}.png")))
            .expect("save");
    }
    let out = classm(
        t.path(),
        &[
            "stain",
            "fit",
            "crops",
            "--slide",
            "-o",
            "slide.json",
            "--target-out",
            "target.json",
        ],
    );
    assert_eq!(code(&out), 0);
    let slide = read_json(&t.path().join("slide.json"));
    // One estimate, not a per-image report.
    assert!(slide.get("results").is_none());
    let (sh, se) = assert_unit_matrix(&slide);
    assert_eq!(
        slide["sampling"],
        serde_json::json!({"kind": "grid", "step": 10})
    );
    let inputs = slide["inputs"].as_array().expect("inputs");
    assert_eq!(inputs.len(), 3);
    let origins: Vec<u64> = inputs
        .iter()
        .map(|i| i["origin"][1].as_u64().expect("origin"))
        .collect();
    assert_eq!(origins, [0, u64::from(h), 2 * u64::from(h)]);
    let d = &slide["diagnostics"];
    assert_eq!(d["total_pixels"], 3 * w as usize * h as usize);
    assert!(d["sampled_pixels"].as_u64().expect("sampled") < 3 * u64::from(w * h) / 90);
    // Three quarters of the tile give nearly the whole tile's stains.
    let whole = classm(t.path(), &["stain", "fit", FIXTURE]);
    let whole: Value = serde_json::from_slice(&whole.stdout).expect("json");
    let (wh, we) = assert_unit_matrix(&whole["results"][0]["ok"]);
    assert!(angle_deg(sh, wh) < 3.0 && angle_deg(se, we) < 3.0);
    assert_eq!(
        read_json(&t.path().join("target.json"))["matrix"],
        slide["matrix"]
    );

    // Decoding in every pass gives exactly the same estimate as decoding once.
    let out = classm(
        t.path(),
        &[
            "stain",
            "fit",
            "crops",
            "--slide",
            "-o",
            "streamed.json",
            "--slide-cache-mib",
            "0",
        ],
    );
    assert_eq!(code(&out), 0);
    assert_eq!(read_json(&t.path().join("streamed.json")), slide);

    // The slide estimate separates other images.
    let out = classm(
        t.path(),
        &[
            "stain",
            "separate",
            FIXTURE,
            "-o",
            "sep",
            "--stain-json",
            "slide.json",
        ],
    );
    assert_eq!(code(&out), 0);
    let used = read_json(&t.path().join("sep/torchstain__source.stain.json"));
    assert_eq!(used["source"], "stain_file");
    assert_eq!(used["matrix"], slide["matrix"]);

    // A corrupt tile is skipped and reported; the others still give an estimate.
    fs::write(crops.join("crop3.png"), b"not a png").expect("write");
    for cache in ["256", "0"] {
        let out = classm(
            t.path(),
            &[
                "stain",
                "fit",
                "crops",
                "--slide",
                "-o",
                "partial.json",
                "--slide-cache-mib",
                cache,
            ],
        );
        assert_eq!(code(&out), 1);
        assert!(stderr(&out).contains("crop3.png"));
        let partial = read_json(&t.path().join("partial.json"));
        assert_eq!(partial["matrix"], slide["matrix"]);
        assert!(partial["inputs"][3]["error"]["kind"].is_string());
    }
    assert_no_temporaries(t.path());
}

#[test]
fn conversions_are_reported_and_masks_applied() {
    let t = tempdir();
    let src = image::open(FIXTURE).expect("fixture");
    let d = t.path().join("in");
    fs::create_dir(&d).expect("mkdir");
    src.to_rgba8().save(d.join("rgba.png")).expect("save");
    src.to_luma8().save(d.join("grey.png")).expect("save");
    let out = classm(t.path(), &["stain", "fit", "in", "-o", "fit.json"]);
    let fit = read_json(&t.path().join("fit.json"));
    let r = fit["results"].as_array().expect("results");
    assert_eq!(r[0]["conversion"], "grey_to_rgb");
    // A grey image has one colour direction only.
    assert_eq!(r[0]["error"]["kind"], "rank_deficient");
    assert_eq!(r[1]["conversion"], "dropped_alpha");
    assert_unit_matrix(&r[1]["ok"]);
    assert_eq!(fit["summary"]["conversions"]["dropped_alpha"], 1);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("1 dropped_alpha"));

    // Masks: a full mask changes nothing, an empty mask leaves no tissue, a missing mask fails.
    let masks = t.path().join("masks");
    fs::create_dir(&masks).expect("mkdir");
    let (w, h) = (src.width(), src.height());
    image::GrayImage::from_pixel(w, h, image::Luma([255]))
        .save(masks.join("rgba.png"))
        .expect("save");
    let out = classm(
        t.path(),
        &[
            "stain",
            "fit",
            "in/rgba.png",
            "in/grey.png",
            "--mask-dir",
            "masks",
            "-o",
            "masked.json",
        ],
    );
    assert_eq!(code(&out), 1);
    let masked = read_json(&t.path().join("masked.json"));
    assert_eq!(masked["results"][0]["ok"]["matrix"], r[1]["ok"]["matrix"]);
    assert_eq!(masked["results"][1]["error"]["kind"], "mask");
    image::GrayImage::new(w, h)
        .save(masks.join("rgba.png"))
        .expect("save");
    let out = classm(
        t.path(),
        &[
            "stain",
            "fit",
            "in/rgba.png",
            "--mask-dir",
            "masks",
            "-o",
            "empty.json",
        ],
    );
    assert_eq!(code(&out), 1);
    let empty = read_json(&t.path().join("empty.json"));
    assert_eq!(empty["results"][0]["error"]["kind"], "empty_tissue");
}

#[test]
fn usage_errors_exit_2() {
    let t = tempdir();
    for args in [
        vec![
            "stain",
            "separate",
            FIXTURE,
            "-o",
            "x",
            "--stain-json",
            "s.json",
            "--convention",
            "classm",
        ],
        vec!["stain", "fit", FIXTURE, FIXTURE, "--target-out", "t.json"],
        vec!["stain", "fit", FIXTURE, "--sampling", "grid:0"],
        vec!["stain", "fit", FIXTURE, "--i0", "1,2"],
        vec!["stain", "fit"],
    ] {
        let out = classm(t.path(), &args);
        assert_eq!(code(&out), 2, "{args:?}");
    }
    // Two inputs that would write the same outputs.
    let d = t.path().join("d");
    fs::create_dir(&d).expect("mkdir");
    fs::copy(FIXTURE, d.join("a.png")).expect("copy");
    fs::copy(FIXTURE, d.join("a.tif")).expect("copy");
    let out = classm(t.path(), &["stain", "separate", "d", "-o", "o"]);
    assert_eq!(code(&out), 2);
    assert!(!t.path().join("o").exists());
    // A dataset folder whose images sit in class folders: the message says how to read them.
    let ds = t.path().join("ds");
    fs::create_dir_all(ds.join("tumour")).expect("mkdir");
    fs::copy(FIXTURE, ds.join("tumour/a.png")).expect("copy");
    let out = classm(t.path(), &["stain", "fit", "ds", "-o", "ds.json"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("add --recursive"), "{}", stderr(&out));
    let out = classm(t.path(), &["stain", "fit", "ds", "-r", "-o", "ds.json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // A missing input file is a failed file, not a usage error.
    let out = classm(t.path(), &["stain", "fit", "missing.png", "-o", "m.json"]);
    assert_eq!(code(&out), 1);
    assert_eq!(
        read_json(&t.path().join("m.json"))["results"][0]["error"]["kind"],
        "not_found"
    );
}

// ---- classm data ----------------------------------------------------------------------------

const MINI: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/ebhi-mini/MANIFEST.tsv"
);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn data_check_reports_groups_and_reuses_the_stain_cache() {
    let dir = tempdir();
    let out = classm(
        dir.path(),
        &["data", "check", MINI, "--json", "report.json"],
    );
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(
        text.contains("samples   22 (0 unlabelled) in 18 groups"),
        "{text}"
    );
    assert!(text.contains("18 groups estimated, 0 fell back"), "{text}");
    assert!(stderr(&out).contains("18 computed, 0 from the cache"));
    let report = read_json(&dir.path().join("report.json"));
    assert_eq!(report["stains"].as_array().map(Vec::len), Some(18));
    assert_eq!(
        report["splits"]["counts"][0].as_array().map(Vec::len),
        Some(7)
    );

    let again = classm(dir.path(), &["data", "check", MINI]);
    assert_eq!(code(&again), 0);
    assert!(stderr(&again).contains("0 computed, 18 from the cache"));
}

#[test]
fn data_check_aligns_long_group_names() {
    // Without a manifest each image is its own group, named by its path.
    let dir = tempdir();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("tumour")).unwrap();
    let names = [
        "tumour/a.png",
        "tumour/a_long_patch_name_from_a_slide_row_1351_col_1201.png",
    ];
    for n in names {
        fs::copy(FIXTURE, data.join(n)).unwrap();
    }
    let out = classm(dir.path(), &["data", "check", "data"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    let header = text
        .lines()
        .find(|l| l.starts_with("group "))
        .unwrap_or_else(|| panic!("no stain table header in {text}"));
    // "files" is right-aligned: its last character marks where every count ends.
    let end = header.find("files").unwrap() + "files".len();
    for n in names {
        let row = text
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("no row for {n} in {text}"));
        assert_eq!(
            &row[end - 1..=end],
            "1 ",
            "misaligned row {row:?} under {header:?}"
        );
    }
}

#[test]
fn data_check_names_unreadable_files_and_fails() {
    let dir = tempdir();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("tumour")).unwrap();
    fs::copy(FIXTURE, data.join("tumour/good.png")).unwrap();
    fs::write(
        data.join("tumour/broken.png"),
        b"\x89PNG\r\n\x1a\n truncated",
    )
    .unwrap();
    let out = classm(dir.path(), &["data", "check", "data", "--no-stains"]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(
        text.contains("unreadable 1:") && text.contains("broken.png"),
        "{text}"
    );
    assert!(!text.contains("good.png"), "{text}");
}

#[test]
fn data_split_is_reproducible_and_never_overwrites_by_accident() {
    let dir = tempdir();
    let args = [
        "data",
        "split",
        MINI,
        "--out",
        "s/split.tsv",
        "--splits",
        "train=50%,val=rest",
        "--seed",
        "4",
    ];
    let out = classm(dir.path(), &args);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).starts_with("split "), "{}", stdout(&out));
    let first = fs::read_to_string(dir.path().join("s/split.tsv")).unwrap();
    assert!(first.starts_with("# classm-split/1\n"));
    assert!(dir.path().join("s/split.counts.tsv").is_file());

    let refused = classm(dir.path(), &args);
    assert_eq!(code(&refused), 2);
    assert!(stderr(&refused).contains("--force"));
    assert_eq!(
        fs::read_to_string(dir.path().join("s/split.tsv")).unwrap(),
        first
    );

    let mut forced = args.to_vec();
    forced.push("--force");
    assert_eq!(code(&classm(dir.path(), &forced)), 0);
    assert_eq!(
        fs::read_to_string(dir.path().join("s/split.tsv")).unwrap(),
        first,
        "same seed, same split"
    );

    let check = classm(
        dir.path(),
        &[
            "data",
            "check",
            MINI,
            "--split-file",
            "s/split.tsv",
            "--no-stains",
        ],
    );
    assert_eq!(code(&check), 0);
    let text = stdout(&check);
    assert!(
        text.contains("split file s/split.tsv")
            && text.contains("\ntrain ")
            && text.contains("\nval "),
        "{text}"
    );

    let bad = classm(
        dir.path(),
        &[
            "data",
            "split",
            MINI,
            "--out",
            "x.tsv",
            "--splits",
            "a=70%,b=70%",
        ],
    );
    assert_eq!(code(&bad), 2);
}
