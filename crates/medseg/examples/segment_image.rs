//! Segment the object inside a box on a 2D image with LiteMedSAM's official weights.
//!
//! `cargo run --release --example segment_image -- tests/fixtures/images/demo_ct.png 95,255,190,350`
//! (fetches the weights once: `medseg::weights::fetch_default`).

fn main() -> medseg::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(bbox)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: segment_image IMAGE X0,Y0,X1,Y1");
        std::process::exit(2);
    };
    let bbox = medseg::prompt::parse_box(bbox)?;
    medseg::weights::fetch_default()?;
    let seg =
        medseg::Segmenter::from_default_weights(medseg::ModelFamily::LiteMedSam, &medseg::cpu())?;
    let image = medseg::io::read_png(path)?;
    let pred = seg.segment(&image, bbox)?;
    let area = pred.mask(0, 0).iter().filter(|&&m| m).count();
    println!(
        "{area} pixels in the mask, predicted IoU {:.4}",
        pred.iou_predictions[0]
    );
    Ok(())
}
