//! `medseg segment --prompts prompts.json`: a 3D session script (boxes, clicks, masks on any
//! slice, several objects, propagations; `medseg::propagate::steps`) on any family, written as
//! a label map (values = object ids) with one summary line per object.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use medseg::io::output::Outputs;
use medseg::propagate::{parse_steps, SessionStep};
use medseg::{io, Direction, LesionStats, SessionOptions, Volume, VolumeSession};

use crate::{json_str, load_segmenter, Job};

/// Run the script at `prompts` on `vol` and write the label map (and the JSON summary).
pub fn segment_session(
    job: &Job,
    vol: &Volume,
    prompts: &Path,
    window: Option<medseg::Intensity>,
    mut outputs: Outputs,
) -> Result<()> {
    let text = std::fs::read_to_string(prompts)
        .with_context(|| format!("--prompts {}", prompts.display()))?;
    let mut steps = parse_steps(&text).context("--prompts")?;
    if !matches!(steps.last(), Some(SessionStep::Propagate { .. })) {
        steps.push(SessionStep::Propagate {
            direction: Direction::Both,
            start: None,
            max: None,
        });
    }
    io::mask::check_format(job.output, vol).context("--output")?;
    let seg = load_segmenter(job.family, job.weights, job.precision)?;
    let opts = SessionOptions {
        intensity: window,
        ..Default::default()
    };
    let mut session = VolumeSession::new(&seg, vol, &opts)?;
    let base = prompts.parent().unwrap_or(Path::new("."));
    let mut read_mask = |p: &str| -> medseg::Result<Vec<bool>> {
        let image = io::read_png(base.join(p))?;
        Ok(image
            .data
            .chunks(image.channels)
            .map(|px| px.iter().any(|&v| v > 0))
            .collect())
    };
    let mut first_prompt = None;
    for (i, step) in steps.iter().enumerate() {
        if let SessionStep::Prompt { slice, .. } | SessionStep::Mask { slice, .. } = step {
            first_prompt.get_or_insert(*slice);
        }
        session
            .apply(step, &mut read_mask, &mut |_| {})
            .with_context(|| format!("--prompts entry {i}"))?;
    }
    let ids = session.object_ids();
    if ids.iter().any(|&id| id > 255) {
        return Err(anyhow!(
            "--prompts: object ids up to 255 in a label map (got {ids:?})"
        ));
    }
    let labels: Vec<u8> = session.label_map().into_iter().map(|v| v as u8).collect();
    let objects: Vec<u8> = ids.iter().map(|&id| id as u8).collect();
    let key = first_prompt.unwrap_or(0);
    let info = job.mask_info(&seg);
    io::mask::stage_labels(&mut outputs, job.output, &labels, &objects, vol, key, &info)?;
    let stats: Vec<(u32, LesionStats)> = ids
        .iter()
        .map(|&id| {
            let mask: Vec<bool> = labels.iter().map(|&l| u32::from(l) == id).collect();
            (id, LesionStats::compute(&mask, vol))
        })
        .collect();
    let json = summary_json(job, vol, &stats);
    if let Some(j) = job.json.filter(|p| *p != Path::new("-")) {
        crate::stage(&mut outputs, j, |p| {
            std::fs::write(p, &json).map_err(|e| medseg::Error::Output {
                path: p.to_path_buf(),
                reason: e.to_string(),
            })
        })?;
    }
    outputs.commit()?;
    print(job, vol, &stats, &json);
    Ok(())
}

/// One line per object (on stderr when the JSON goes to stdout).
fn print(job: &Job, vol: &Volume, stats: &[(u32, LesionStats)], json: &str) {
    let to_stdout = job.json != Some(Path::new("-"));
    let mut lines = vec![format!(
        "{}: {}, {} objects -> {}",
        job.input.display(),
        crate::describe(vol),
        stats.len(),
        job.output.display()
    )];
    for (id, st) in stats {
        let ml = st
            .volume_ml
            .map_or("unknown mL (no voxel size)".into(), |v| {
                format!("{v:.3} mL")
            });
        let range = st
            .slice_range
            .map_or("no slices".into(), |(a, b)| format!("slices {a}-{b}"));
        lines.push(format!("object {id}: {ml}, {} voxels, {range}", st.voxels));
    }
    for l in lines {
        if to_stdout {
            println!("{l}");
        } else {
            eprintln!("{l}");
        }
    }
    if !to_stdout {
        println!("{json}");
    }
}

fn summary_json(job: &Job, vol: &Volume, stats: &[(u32, LesionStats)]) -> String {
    let num = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x}"));
    let objects: Vec<String> = stats
        .iter()
        .map(|(id, st)| {
            let range = st
                .slice_range
                .map_or("null".into(), |(a, b)| format!("[{a}, {b}]"));
            format!(
                "{{\"object\": {id}, \"label\": {}, \"volume_ml\": {}, \"voxels\": {}, \
                 \"slice_range\": {range}, \"max_area_mm2\": {}}}",
                json_str(&format!("{} {id}", job.segment.label)),
                num(st.volume_ml),
                st.voxels,
                st.max_area_mm2
            )
        })
        .collect();
    format!(
        "{{\"input\": {}, \"output\": {}, \"model\": {}, \"dims\": [{}, {}, {}], \"objects\": [{}]}}",
        json_str(&job.input.display().to_string()),
        json_str(&job.output.display().to_string()),
        json_str(job.family.name()),
        vol.dims[0],
        vol.dims[1],
        vol.dims[2],
        objects.join(", ")
    )
}
