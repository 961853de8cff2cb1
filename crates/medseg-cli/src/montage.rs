//! `--overlay`: the image with the mask tinted red and the box in green; for a volume, a
//! montage of up to 16 of the slices segmented, each tile labelled with its slice number, the
//! key slice framed in yellow, and a legend line with the model and the volume in mL. Text is
//! drawn with embedded-graphics' built-in 6×10 bitmap font (compiled in, nothing fetched).

use std::convert::Infallible;
use std::path::Path;

use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyleBuilder};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::{Baseline, Text};
use image::{Rgb, RgbImage};
use medseg::{LesionStats, ModelFamily};

const GREEN: Rgb<u8> = Rgb([0, 255, 0]);
const YELLOW: Rgb<u8> = Rgb([255, 255, 0]);
/// Height of one text line (FONT_6X10) with a pixel above and below.
pub const LINE: usize = 12;
const MAX_TILES: usize = 16;

/// The volume a montage shows.
pub struct Tiles<'a> {
    /// The 8-bit volume the model saw.
    pub img8: &'a [u8],
    pub mask: &'a [bool],
    pub dims: [usize; 3],
    /// The box used on each slice segmented.
    pub boxes: &'a [(usize, [f64; 4])],
}

/// The legend of a volume's montage: model, volume (mL when the voxel size is known), key
/// slice and slice range.
pub fn legend(
    family: ModelFamily,
    stats: &LesionStats,
    key: usize,
    adc: Option<&medseg::stroke::AdcReadout>,
) -> String {
    let volume = match stats.volume_ml {
        Some(ml) => format!("{ml:.3} mL"),
        None => format!("{} voxels (no voxel size: no mL)", stats.voxels),
    };
    let range = match stats.slice_range {
        Some((a, b)) => format!("slices {a}-{b}"),
        None => "empty".into(),
    };
    let core = match adc {
        Some(a) => match a.core_ml {
            Some(ml) => format!(" | core {ml:.3} mL (ADC<{:.0})", a.threshold),
            None => format!(" | core {} voxels (ADC<{:.0})", a.core_voxels, a.threshold),
        },
        None => String::new(),
    };
    format!("{family} | {volume} | key slice {key} | {range}{core}")
}

/// A 2D overlay: one `[ny, nx]` image, its mask and box, no text (the image's own size).
pub fn overlay_image(
    path: &Path,
    grey: &[u8],
    mask: &[bool],
    [ny, nx]: [usize; 2],
    bbox: [f64; 4],
) -> medseg::Result<()> {
    let mut out = RgbImage::new(nx as u32, ny as u32);
    let tiles = Tiles {
        img8: grey,
        mask,
        dims: [1, ny, nx],
        boxes: &[(0, bbox)],
    };
    draw_tile(&mut out, &tiles, 0, (0, 0));
    save(&out, path)
}

/// A volume's montage: slices `zs` (at most 16 shown, evenly picked), labelled, the key slice
/// framed, and `legend` on a line below.
pub fn overlay_volume(
    path: &Path,
    tiles: &Tiles,
    zs: &[usize],
    key: usize,
    legend: &str,
) -> medseg::Result<()> {
    let [nz, ny, nx] = tiles.dims;
    let zs = shown(zs, nz);
    let cols = (zs.len() as f64).sqrt().ceil() as usize;
    let rows = zs.len().div_ceil(cols);
    let width = (cols * nx).max(text_width(legend) + 2);
    let mut out = RgbImage::new(width as u32, (rows * ny + LINE) as u32);
    for (t, &z) in zs.iter().enumerate() {
        let origin = ((t % cols) * nx, (t / cols) * ny);
        draw_tile(&mut out, tiles, z, origin);
        let label = if z == key {
            frame(&mut out, origin, (nx, ny));
            format!("{z} key")
        } else {
            z.to_string()
        };
        text(&mut out, &label, (origin.0 + 2, origin.1 + 1), YELLOW);
    }
    text(&mut out, legend, (1, rows * ny + 1), Rgb([255, 255, 255]));
    save(&out, path)
}

/// The slices a montage shows: all of `zs`, or 16 evenly spaced; the middle slice when none.
fn shown(zs: &[usize], nz: usize) -> Vec<usize> {
    match zs.len() {
        0 => vec![nz / 2],
        n if n > MAX_TILES => (0..MAX_TILES).map(|i| zs[i * (n - 1) / 15]).collect(),
        _ => zs.to_vec(),
    }
}

/// Slice `z` at `origin`: grey, the mask tinted red, the slice's box in green.
fn draw_tile(out: &mut RgbImage, tiles: &Tiles, z: usize, (ox, oy): (usize, usize)) {
    let [_, ny, nx] = tiles.dims;
    let n = ny * nx;
    for y in 0..ny {
        for x in 0..nx {
            let g = tiles.img8[z * n + y * nx + x];
            let px = if tiles.mask[z * n + y * nx + x] {
                [((g as u16 + 255) / 2) as u8, g / 2, g / 2]
            } else {
                [g, g, g]
            };
            out.put_pixel((ox + x) as u32, (oy + y) as u32, Rgb(px));
        }
    }
    if let Some((_, b)) = tiles.boxes.iter().find(|(bz, _)| *bz == z) {
        let c = |v: f64, hi: usize| (v.max(0.0) as usize).min(hi - 1);
        let (x0, y0) = (ox + c(b[0], nx), oy + c(b[1], ny));
        let (x1, y1) = (ox + c(b[2], nx), oy + c(b[3], ny));
        rectangle(out, (x0, y0), (x1, y1), GREEN);
    }
}

/// The key slice's tile framed in yellow (its outermost pixels).
fn frame(out: &mut RgbImage, (ox, oy): (usize, usize), (w, h): (usize, usize)) {
    rectangle(out, (ox, oy), (ox + w - 1, oy + h - 1), YELLOW);
}

/// The outline of `[x0, x1] × [y0, y1]`.
fn rectangle(out: &mut RgbImage, (x0, y0): (usize, usize), (x1, y1): (usize, usize), c: Rgb<u8>) {
    for x in x0..=x1 {
        out.put_pixel(x as u32, y0 as u32, c);
        out.put_pixel(x as u32, y1 as u32, c);
    }
    for y in y0..=y1 {
        out.put_pixel(x0 as u32, y as u32, c);
        out.put_pixel(x1 as u32, y as u32, c);
    }
}

fn text_width(s: &str) -> usize {
    s.chars().count() * FONT_6X10.character_size.width as usize
}

/// `s` in FONT_6X10 with its top-left at `(x, y)`, on black (readable on any image); what
/// runs past the image is clipped.
fn text(out: &mut RgbImage, s: &str, (x, y): (usize, usize), Rgb([r, g, b]): Rgb<u8>) {
    let style = MonoTextStyleBuilder::new()
        .font(&FONT_6X10)
        .text_color(Rgb888::new(r, g, b))
        .background_color(Rgb888::BLACK)
        .build();
    let at = Point::new(x as i32, y as i32);
    // Infallible: the canvas clips instead of failing.
    let _ = Text::with_baseline(s, at, style, Baseline::Top).draw(&mut Canvas(out));
}

/// An `RgbImage` as an embedded-graphics draw target.
struct Canvas<'a>(&'a mut RgbImage);

impl OriginDimensions for Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Canvas<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        let (w, h) = self.0.dimensions();
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < w && (p.y as u32) < h {
                self.0
                    .put_pixel(p.x as u32, p.y as u32, Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }
}

fn save(out: &RgbImage, path: &Path) -> medseg::Result<()> {
    out.save(path).map_err(|e| medseg::Error::ImageCodec {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ml: Option<f64>) -> LesionStats {
        LesionStats {
            voxels: 120,
            volume_ml: ml,
            slice_range: Some((3, 9)),
            max_area_mm2: 0.0,
            max_area_slice: None,
            extent_mm: [0.0; 3],
            mean_intensity: 0.0,
        }
    }

    #[test]
    fn legend_names_model_volume_and_slices() {
        let l = legend(ModelFamily::LiteMedSam, &stats(Some(4.2049)), 6, None);
        assert_eq!(l, "lite-medsam | 4.205 mL | key slice 6 | slices 3-9");
        let core = medseg::stroke::AdcReadout {
            mean: Some(540.0),
            core_voxels: 30,
            core_ml: Some(1.25),
            threshold: 620.0,
            note: None,
        };
        let l = legend(
            ModelFamily::LiteMedSam,
            &stats(Some(4.2049)),
            6,
            Some(&core),
        );
        assert!(l.ends_with("slices 3-9 | core 1.250 mL (ADC<620)"), "{l}");
        let l = legend(ModelFamily::MedSam, &stats(None), 6, None);
        assert_eq!(
            l,
            "medsam | 120 voxels (no voxel size: no mL) | key slice 6 | slices 3-9"
        );
    }

    #[test]
    fn montage_labels_each_tile_frames_the_key_and_adds_a_legend() {
        let (nz, ny, nx) = (4, 40, 50);
        let img8 = vec![100u8; nz * ny * nx];
        let mask = vec![false; nz * ny * nx];
        let tiles = Tiles {
            img8: &img8,
            mask: &mask,
            dims: [nz, ny, nx],
            boxes: &[],
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.png");
        let legend = "lite-medsam | 1.000 mL | key slice 2 | slices 1-3";
        overlay_volume(&p, &tiles, &[1, 2, 3], 2, legend).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // 2 × 2 tiles, the legend wider than them, one text line below
        assert_eq!(
            img.dimensions(),
            ((text_width(legend) + 2) as u32, (2 * ny + LINE) as u32)
        );
        let yellow_in = |x0: usize, y0: usize, w: usize, h: usize| {
            (x0..x0 + w).any(|x| (y0..y0 + h).any(|y| *img.get_pixel(x as u32, y as u32) == YELLOW))
        };
        for t in 0..3 {
            let (ox, oy) = ((t % 2) * nx, (t / 2) * ny);
            assert!(yellow_in(ox + 2, oy + 1, 12, 10), "tile {t} has no label");
        }
        // the key slice (tile 1) is framed, the others are not
        assert!((0..ny).all(|y| *img.get_pixel((nx + nx - 1) as u32, y as u32) == YELLOW));
        assert_ne!(*img.get_pixel((nx - 1) as u32, (ny / 2) as u32), YELLOW);
        let white =
            (0..img.width()).filter(|&x| *img.get_pixel(x, (2 * ny + 5) as u32) == Rgb([255; 3]));
        assert!(white.count() > 20, "no legend text");
    }
}
