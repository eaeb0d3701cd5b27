//! The per-sprite keeper process; see `wisp_runtime::keeper`.

fn main() {
    wisp_runtime::keeper::main()
}
