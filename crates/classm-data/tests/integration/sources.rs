use classm_data::{
    DataError, Dataset, DecodeProblem, GroupBy, GroupColumn, ManifestColumns, OnError, Origin,
    SourceOptions, scan,
};
use classm_stain::Converted;

use crate::require_shared;
use crate::support::{copy_class, mini, mini_manifest, write_png};

#[test]
fn fixture_manifest_has_classes_groups_and_paths() {
    let d = mini();
    assert_eq!(d.origin, Origin::Manifest);
    assert_eq!(d.samples.len(), 22);
    assert_eq!(
        d.classes,
        [
            "adenocarcinoma",
            "high_grade_IN",
            "low_grade_IN",
            "normal",
            "polyp",
            "serrated_adenoma"
        ]
    );
    assert_eq!(d.group_count(), 18);
    assert!(
        d.samples
            .iter()
            .all(|s| s.path.is_file() && s.label.is_some())
    );
    assert_eq!(
        d.relative_name(&d.samples[0]),
        "adenocarcinoma/GT2001837-1-400-001.png"
    );
    assert_eq!(d.samples[0].group, "C2001837");
}

#[test]
fn fixture_as_class_folders_matches_manifest_labels() {
    let root = mini_manifest().parent().unwrap().to_path_buf();
    let d = Dataset::open(&root, &SourceOptions::default()).unwrap();
    assert_eq!(d.origin, Origin::ClassFolders);
    assert_eq!(
        d.samples.len(),
        22,
        "MANIFEST.tsv, SOURCE.md and the script are not images"
    );
    let m = mini();
    for s in &d.samples {
        let rel = d.relative_name(s);
        let twin = m
            .samples
            .iter()
            .find(|t| m.relative_name(t) == rel)
            .unwrap();
        assert_eq!(d.classes[s.label.unwrap()], m.classes[twin.label.unwrap()]);
        assert_eq!(s.group, rel, "class folders default to one group per file");
    }
    // Groups from a pattern on the file name: the case number.
    let opts = SourceOptions {
        group_by: GroupBy::Pattern(regex::Regex::new(r"(\d{7})-").unwrap()),
        ..SourceOptions::default()
    };
    let d = Dataset::open(&root, &opts).unwrap();
    assert_eq!(d.group_count(), 18);
}

#[test]
fn unlabelled_folder_and_bad_files_are_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    copy_class(dir.path(), "normal");
    write_png(&dir.path().join("unlabelled/u1.png"), 8, 8, |x, y| {
        [x as u8 * 20, y as u8 * 20, 128]
    });
    std::fs::write(dir.path().join("normal/empty.png"), b"").unwrap();
    std::fs::write(dir.path().join("normal/text.png"), b"this is not an image").unwrap();
    let good = std::fs::read(dir.path().join("normal/GT2012221-2-400-001.png")).unwrap();
    std::fs::write(
        dir.path().join("normal/truncated.png"),
        &good[..good.len() / 3],
    )
    .unwrap();
    let mut corrupt = good.clone();
    for b in corrupt.iter_mut().skip(200).take(2000) {
        *b ^= 0x5a;
    }
    std::fs::write(dir.path().join("normal/corrupt.png"), &corrupt).unwrap();
    image::GrayImage::from_pixel(6, 6, image::Luma([90]))
        .save(dir.path().join("normal/grey.png"))
        .unwrap();
    image::RgbaImage::from_pixel(6, 6, image::Rgba([200, 100, 150, 7]))
        .save(dir.path().join("normal/rgba.png"))
        .unwrap();
    image::ImageBuffer::<image::Rgb<u16>, _>::from_pixel(5, 5, image::Rgb([65535u16, 32768, 0]))
        .save(dir.path().join("normal/deep.tif"))
        .unwrap();

    let d = Dataset::open(dir.path(), &SourceOptions::default()).unwrap();
    assert_eq!(d.classes, ["normal"], "unlabelled/ is not a class");
    assert_eq!(d.samples.iter().filter(|s| s.label.is_none()).count(), 1);

    let first = scan(&d, OnError::Fail, &|| {}).unwrap_err();
    assert!(
        first
            .path()
            .is_some_and(|p| p.ends_with("normal/corrupt.png")),
        "{first}"
    );

    let report = scan(&d, OnError::SkipAndReport, &|| {}).unwrap();
    let problem = |name: &str| {
        report
            .failures
            .iter()
            .find(|f| d.samples[f.index].path.ends_with(name))
            .map(|f| match &f.error {
                DataError::Decode { problem, .. } => *problem,
                other => panic!("{name}: {other}"),
            })
    };
    assert_eq!(problem("empty.png"), Some(DecodeProblem::Empty));
    assert_eq!(problem("text.png"), Some(DecodeProblem::Unsupported));
    assert_eq!(problem("truncated.png"), Some(DecodeProblem::Truncated));
    assert_eq!(problem("corrupt.png"), Some(DecodeProblem::Corrupt));
    assert_eq!(report.failures.len(), 4);
    for f in &report.failures {
        assert!(
            f.error
                .to_string()
                .contains(&*d.samples[f.index].path.to_string_lossy())
        );
    }
    let conv = report.conversions();
    assert_eq!(conv.get("grey to RGB"), Some(&1));
    assert_eq!(conv.get("alpha dropped"), Some(&1));
    assert_eq!(conv.get("16-bit/float to 8-bit"), Some(&1));
    let readable = report.readable(&d);
    assert_eq!(readable.samples.len(), d.samples.len() - 4);
    let deep = classm_data::read_rgb8(&dir.path().join("normal/deep.tif")).unwrap();
    assert_eq!(deep.converted, Converted::ReducedDepth);
    assert_eq!(deep.image.get_pixel(0, 0).0, [255, 128, 0]);
}

#[test]
fn manifest_errors_name_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.csv");
    std::fs::write(&m, "file,class,slide\na.png,x,s1\n").unwrap();
    let err = Dataset::open(
        &m,
        &SourceOptions {
            columns: ManifestColumns {
                group: GroupColumn::Named("patient".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, DataError::Table { line: Some(1), .. }),
        "{err}"
    );
    assert!(err.to_string().contains("patient") && err.to_string().contains("m.csv"));

    std::fs::write(&m, "path,label,group\na.png,x,s1\nb.png,y,\n").unwrap();
    let err = Dataset::open(&m, &SourceOptions::default()).unwrap_err();
    assert!(
        matches!(&err, DataError::Table { line: Some(3), .. }),
        "{err}"
    );

    std::fs::write(&m, "path,label,group\na.png,x,s1\nb.png,,s2\n").unwrap();
    let d = Dataset::open(&m, &SourceOptions::default()).unwrap();
    assert_eq!(d.samples[1].label, None, "an empty label is unlabelled");
    assert_eq!(d.samples[0].path, dir.path().join("a.png"));
    let err = Dataset::open(
        &m,
        &SourceOptions {
            classes: Some(vec!["y".into()]),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("line 2") && err.to_string().contains("`x`"),
        "{err}"
    );
}

#[test]
fn shared_datasets_load_and_decode() {
    let shared = require_shared!();
    let data = shared.join("data");
    let ebhi = Dataset::open(
        &data.join("ebhi-seg/MANIFEST.tsv"),
        &SourceOptions::default(),
    )
    .unwrap();
    assert_eq!(ebhi.samples.len(), 1553);
    assert_eq!(ebhi.classes.len(), 6);
    assert_eq!(ebhi.group_count(), 238, "case_id is the group");
    for (path, classes, n) in [
        ("kather2016-sample/MANIFEST.tsv", 8, 24),
        ("crc-val-he-7k-sample/MANIFEST.tsv", 8, 32),
        ("tiff-samples/kather2016", 8, 24),
        ("jpeg-samples", 3, 30),
    ] {
        let d = Dataset::open(&data.join(path), &SourceOptions::default()).unwrap();
        assert_eq!(d.classes.len(), classes, "{path}");
        if n > 0 {
            assert_eq!(d.samples.len(), n, "{path}");
        }
        let report = scan(&d, OnError::Fail, &|| {}).unwrap();
        assert!(report.failures.is_empty(), "{path}");
    }
    let report = scan(&ebhi, OnError::Fail, &|| {}).unwrap();
    assert_eq!(report.sizes().get(&(224, 224)), Some(&1553));
}
