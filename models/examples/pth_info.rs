//! Lists the tensors of a PyTorch checkpoint: `cargo run -p edgeseg-models --example pth_info -- file.pth`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: pth_info FILE.pth")?;
    let mut t = candle_core::pickle::read_all(&path)?;
    t.sort_by(|a, b| a.0.cmp(&b.0));
    let mut total = 0usize;
    for (name, tensor) in &t {
        total += tensor.elem_count();
        println!("{name}\t{:?}\t{:?}", tensor.dims(), tensor.dtype());
    }
    println!("{} tensors, {total} elements", t.len());
    Ok(())
}
