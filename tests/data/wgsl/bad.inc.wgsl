// fine
#flag BAD_PARSE BAD_TYPE
#for i in 0..2
fn f{i}() -> u32 {
#if BAD_PARSE
    return 1u +;
#endif
    return P.batch + {i}u;
}
#endfor
#if BAD_TYPE
fn g() -> f32 { return P.batch; }
#endif
