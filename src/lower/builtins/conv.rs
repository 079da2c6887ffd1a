//! Image built-ins: `conv2d` (im2col and one GEMM) and the pools `maxpool2d` and
//! `avgpool2d`, on NCHW tensors.

use super::args::Bound;
use crate::diagnostic::{Diagnostic, Span};
use crate::ir::{Dim, Op, ReduceOp, Value, Window};
use crate::lower::context::{Lowerer, Val, R};

/// `conv2d(x, w, stride, padding)`.
pub(super) fn conv2d(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let xa = b.req("x")?;
    let wa = b.req("w")?;
    let x = lw.f32_arg(xa, "the input")?;
    let w = lw.f32_arg(wa, "the weight")?;
    let stride = b.get("stride").map(|a| lw.int_arg(a, "the stride", 1)).transpose()?.unwrap_or(1);
    let pad = b.get("padding").map(|a| lw.int_arg(a, "the padding", 0)).transpose()?.unwrap_or(0);
    im2col_gemm(lw, x, w, stride, pad, xa.span, wa.span, span).map(Val::Tensor)
}

/// `maxpool2d(x, k, stride)` and `avgpool2d(x, k, stride)`: `k` x `k` windows.
pub(super) fn pool(lw: &mut Lowerer, b: &Bound, span: Span) -> R<Val> {
    let name = b.fname;
    let xa = b.req("x")?;
    let x = lw.f32_arg(xa, "the input")?;
    let k = lw.int_arg(b.req("k")?, "the window size", 1)?;
    let s = b.get("stride").map(|a| lw.int_arg(a, "the stride", 1)).transpose()?.unwrap_or(k);
    let p = windows(lw, x, k, k, s, 0, xa.span, span)?;
    let r = if name == "maxpool2d" {
        lw.reduce(p, ReduceOp::Max, vec![2, 3], false, span)?
    } else {
        lw.mean(p, vec![2, 3], false, span)?
    };
    Ok(Val::Tensor(r))
}

/// The windows of an NCHW image: `[N, C, kh, kw, OH, OW]`.
#[allow(clippy::too_many_arguments)]
fn windows(lw: &mut Lowerer, x: Value, kh: i64, kw: i64, stride: i64, pad: i64, xspan: Span, span: Span) -> R<Value> {
    let ty = lw.g.ty(x).clone();
    if ty.rank() != 4 {
        return Err(Diagnostic::new(
            "E0445",
            xspan,
            format!("expected an NCHW image [N, C, H, W], found {}", lw.ty_str(&ty)),
        )
        .with_help("reshape the input to [B, channels, height, width]"));
    }
    let (Some(h), Some(w)) = (ty.shape[2].as_const(), ty.shape[3].as_const()) else {
        return Err(Diagnostic::new("E0445", xspan, "the image height and width must be known numbers"));
    };
    let big = |v: i64| v > 1 << 20;
    if big(kh) || big(kw) || big(stride) || big(pad) {
        return Err(Diagnostic::new("E0446", span, "window sizes, strides and padding must be below 2^20"));
    }
    if Window::out_len(h, kh as u32, stride as u32, pad as u32).is_none()
        || Window::out_len(w, kw as u32, stride as u32, pad as u32).is_none()
    {
        return Err(Diagnostic::new(
            "E0446",
            span,
            format!("a {kh}x{kw} window does not fit in a {h}x{w} image with padding {pad}"),
        ));
    }
    let win = Window {
        kh: kh as u32,
        kw: kw as u32,
        stride_h: stride as u32,
        stride_w: stride as u32,
        pad_h: pad as u32,
        pad_w: pad as u32,
    };
    lw.push(Op::Im2col(win), vec![x], None, span)
}

/// `conv2d(x [N, C, H, W], w [O, C, kh, kw])` as im2col + one GEMM (cross-correlation,
/// as in PyTorch).
#[allow(clippy::too_many_arguments)]
fn im2col_gemm(
    lw: &mut Lowerer,
    x: Value,
    w: Value,
    stride: i64,
    pad: i64,
    xspan: Span,
    wspan: Span,
    span: Span,
) -> R<Value> {
    let tx = lw.g.ty(x).clone();
    let tw = lw.g.ty(w).clone();
    if tw.rank() != 4 {
        return Err(Diagnostic::new(
            "E0445",
            wspan,
            format!("a conv2d weight is [c_out, c_in, k, k], found {}", lw.ty_str(&tw)),
        ));
    }
    if tx.rank() == 4 && tx.shape[1] != tw.shape[1] {
        let _ = span;
        return Err(Diagnostic::new(
            "E0447",
            xspan,
            format!(
                "conv2d channels differ: the input has {} channels but the weight expects {}",
                tx.shape[1].display(&lw.g.symbols),
                tw.shape[1].display(&lw.g.symbols)
            ),
        )
        .with_label(format!("this is {}", lw.ty_str(&tx)))
        .with_note(wspan, format!("this is {}", lw.ty_str(&tw)))
        .with_help("the weight of conv2d is [c_out, c_in, k, k] and the input [N, c_in, H, W]"));
    }
    let (Some(kh), Some(kw)) = (tw.shape[2].as_const(), tw.shape[3].as_const()) else {
        return Err(Diagnostic::new("E0445", wspan, "the kernel size must be known"));
    };
    let p = windows(lw, x, kh, kw, stride, pad, xspan, span)?;
    let ps = lw.g.ty(p).shape.clone(); // [N, C, kh, kw, OH, OW]
    let (n, c, oh, ow) = (ps[0].clone(), ps[1].clone(), ps[4].clone(), ps[5].clone());
    let o = tw.shape[0].clone();
    let overflow = || Diagnostic::new("E0412", span, "size overflow");
    // Per image, W [O, C·kh·kw] @ patches [C·kh·kw, OH·OW] is the NCHW output directly:
    // the patches' layout [N, C, kh, kw, OH, OW] is already [N, C·kh·kw, OH·OW], and the
    // GEMM reads the broadcast weight with a zero batch stride (no transposes).
    let ohw = oh.mul(&ow).ok_or_else(overflow)?;
    let ckk = c.mul(&Dim::konst(kh * kw)).ok_or_else(overflow)?;
    let pm = lw.reshape(p, vec![n.clone(), ckk.clone(), ohw], span)?;
    let wm = lw.reshape(w, vec![o.clone(), ckk.clone()], span)?;
    let wb = lw.broadcast_to(wm, &[n.clone(), o.clone(), ckk], span)?;
    let y = lw.push(Op::MatMul, vec![wb, pm], None, span)?;
    lw.reshape(y, vec![n, o, oh, ow], span)
}
