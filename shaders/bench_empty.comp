#version 450
// vkrnn-bench's empty dispatch: does nothing, to measure what a dispatch costs by itself. The
// binding is never touched; it is declared so the pipeline layout looks like a real op's.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Unused { uint unused[]; };

void main() {}
