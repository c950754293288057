//! Embedding wgattn in an app that owns its wgpu device: the app fills Q/K/V with its own
//! compute pass, wgattn records its passes into the same encoder, the app reads the output in
//! a later pass, and everything goes to the GPU in one `queue.submit`.
//!
//! Run: `cargo run --release --example embed_in_app`

use wgattn::{AttentionSpec, Buffers, CausalAlign, Context};
use wgpu::util::DeviceExt;

/// What the example computed: the GPU checksums and the CPU reference's.
pub struct Report {
    pub gpu: Vec<f32>,
    pub cpu: Vec<f32>,
    pub adapter: String,
}

/// The app's frame: returns the per-row checksums the app computed from wgattn's output, and
/// the same checksums from the CPU reference.
pub fn run_frame() -> Result<Report, Box<dyn std::error::Error>> {
    // --- the app's own wgpu setup (not wgattn's) ---
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))?;

    let spec = AttentionSpec::new(1, 4, 2, 96, 128, 32).causal(CausalAlign::BottomRight);
    let storage = |label, bytes: usize, extra| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes as u64,
            usage: wgpu::BufferUsages::STORAGE | extra,
            mapped_at_creation: false,
        })
    };
    let none = wgpu::BufferUsages::empty();
    let q = storage("app q", spec.q_len() * 4, none);
    let k = storage("app k", spec.kv_len() * 4, none);
    let v = storage("app v", spec.kv_len() * 4, none);
    let out = storage("app out", spec.q_len() * 4, none);
    let rows = spec.batch * spec.q_heads * spec.seq_q;
    let checksum = storage("app checksum", rows * 4, wgpu::BufferUsages::COPY_SRC);
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("app readback"),
        size: (rows * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let dims = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app dims"),
        contents: bytemuck::cast_slice(&[rows as u32, spec.head_dim as u32]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let module = device.create_shader_module(wgpu::include_wgsl!("shaders/app.wgsl"));
    let pipeline = |entry| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let (fill, consume) = (pipeline("fill"), pipeline("consume"));
    let group = |p: &wgpu::ComputePipeline, entries: &[(u32, &wgpu::Buffer)]| {
        let entries: Vec<_> = entries
            .iter()
            .map(|(binding, b)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: b.as_entire_binding(),
            })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.get_bind_group_layout(0),
            entries: &entries,
        })
    };
    let fill_group = group(&fill, &[(0, &q), (1, &k), (2, &v)]);
    let consume_group = group(&consume, &[(3, &dims), (4, &out), (5, &checksum)]);

    // --- wgattn on the app's device ---
    let ctx = Context::from_device(device.clone(), queue.clone());
    let plan = ctx.plan(&spec)?;

    // --- one frame, one encoder, one submit ---
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("frame"),
    });
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&fill);
        pass.set_bind_group(0, &fill_group, &[]);
        pass.dispatch_workgroups((spec.q_len().max(spec.kv_len()) as u32).div_ceil(64), 1, 1);
    }
    plan.encode(&mut encoder, &Buffers::new(&q, &k, &v, &out))?;
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&consume);
        pass.set_bind_group(0, &consume_group, &[]);
        pass.dispatch_workgroups((rows as u32).div_ceil(64), 1, 1);
    }
    encoder.copy_buffer_to_buffer(&checksum, 0, &readback, 0, (rows * 4) as u64);
    queue.submit([encoder.finish()]);

    let (tx, rx) = std::sync::mpsc::channel();
    readback.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device.poll(wgpu::PollType::wait_indefinitely())?;
    rx.recv()??;
    let gpu: Vec<f32> = bytemuck::pod_collect_to_vec(&readback.slice(..).get_mapped_range()?);

    // --- the same frame on the CPU ---
    let pattern = |t: u32, n: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * (0.37 + 0.11 * t as f32) + t as f32).sin())
            .collect()
    };
    let (qh, kh, vh) = (
        pattern(0, spec.q_len()),
        pattern(1, spec.kv_len()),
        pattern(2, spec.kv_len()),
    );
    let reference = wgattn::reference::attention(&spec, &qh, &kh, &vh)?;
    let d = spec.head_dim;
    let cpu = reference
        .out
        .chunks(d)
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(i, x)| x * (i + 1) as f32)
                .sum()
        })
        .collect();
    Ok(Report {
        gpu,
        cpu,
        adapter: adapter.get_info().name,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let r = run_frame()?;
    let e = wgattn::ErrorStats::compare(&r.gpu, &r.cpu);
    println!("adapter: {}", r.adapter);
    println!(
        "app pass → wgattn → app pass in one submit: {} row checksums",
        r.gpu.len()
    );
    println!("first checksums GPU {:?}", &r.gpu[..4]);
    println!("first checksums CPU {:?}", &r.cpu[..4]);
    println!(
        "relative Frobenius error vs CPU reference: {:.2e}",
        e.rel_fro
    );
    if !e.within(1e-4) {
        return Err("GPU result differs from the reference".into());
    }
    Ok(())
}
