// Temporary: measures how lavapipe handles load patterns.
use wgpu::util::DeviceExt;
fn main() {
    let ctx = wgattn::Context::new().unwrap();
    let dev = ctx.device();
    let n: usize = 16 << 20; // 16M floats = 64 MB
    let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let src = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&data),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let dst = dev.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1 << 20,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    for (name, body) in [
        (
            "contiguous lanes",
            "let i = gid.x; var s = 0.0; for (var t = 0u; t < 64u; t++) { s += src[(t * 65536u + i) & MASK]; } dst[i & 262143u] = s;",
        ),
        (
            "contiguous vec4 lanes",
            "let i = gid.x; var s = vec4<f32>(0.0); for (var t = 0u; t < 16u; t++) { s += src4[(t * 65536u + i) & (MASK / 4u)]; } dst[i & 262143u] = s.x + s.y + s.z + s.w;",
        ),
        (
            "stride-64 lanes",
            "let i = gid.x; var s = 0.0; for (var t = 0u; t < 64u; t++) { s += src[(i * 64u + t) & MASK]; } dst[i & 262143u] = s;",
        ),
        (
            "stride-64 vec4 lanes",
            "let i = gid.x; var s = vec4<f32>(0.0); for (var t = 0u; t < 16u; t++) { s += src4[(i * 16u + t) & (MASK / 4u)]; } dst[i & 262143u] = s.x + s.y + s.z + s.w;",
        ),
        (
            "uniform",
            "let i = gid.x; var s = 0.0; for (var t = 0u; t < 64u; t++) { s += src[(wid.x * 64u + t) & MASK]; } dst[i & 262143u] = s;",
        ),
    ] {
        let src_code = format!(
            "const MASK: u32 = {}u;\n@group(0) @binding(0) var<storage, read> src: array<f32>;\n@group(0) @binding(1) var<storage, read_write> dst: array<f32>;\n@group(0) @binding(2) var<storage, read> src4: array<vec4<f32>>;\n@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {{ {} }}",
            n - 1,
            body
        );
        let m = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(src_code.into()),
        });
        let p = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &m,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 1,
            resource: dst.as_entire_binding(),
        }];
        if body.contains("src[") {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: src.as_entire_binding(),
            });
        }
        if body.contains("src4[") {
            entries.push(wgpu::BindGroupEntry {
                binding: 2,
                resource: src.as_entire_binding(),
            });
        }
        let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.get_bind_group_layout(0),
            entries: &entries,
        });
        let groups = (n / 64 / 64) as u32; // each invocation reads 64 floats -> whole buffer read once
        let mut best = f64::MAX;
        for _ in 0..5 {
            let mut enc = dev.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&p);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(groups, 1, 1);
            }
            let t = std::time::Instant::now();
            ctx.queue().submit([enc.finish()]);
            dev.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{name:24} {:.2} ms  {:.2} GB/s",
            best * 1e3,
            (n * 4) as f64 / best / 1e9
        );
    }
}
