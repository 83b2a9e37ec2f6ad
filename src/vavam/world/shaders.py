"""GLSL 3.30 shaders of the renderer: static town, instanced vehicles, sky.

Fragment outputs: location 0 = RGBA colour, location 1 = (metric depth along the optical axis,
semantic label id).
"""

COMMON_FRAG = """
#version 330
uniform vec3 sun_dir;
uniform vec3 sun_colour;
uniform vec3 ambient;
uniform vec3 fog_colour;
uniform float fog_density;
uniform vec3 window_colour;
in vec3 v_world;
in vec3 v_normal;
in vec3 v_colour;
in vec2 v_uv;
flat in vec2 v_info;
in float v_depth;
layout(location = 0) out vec4 out_colour;
layout(location = 1) out vec2 out_aux;

float hash(vec2 p) {
    p = fract(p * vec2(123.34, 456.21));
    p += dot(p, p + 45.32);
    return fract(p.x * p.y);
}

float vnoise(vec2 p) {  // smooth value noise in [0, 1]
    vec2 i = floor(p);
    vec2 f = fract(p);
    f = f * f * (3.0 - 2.0 * f);
    return mix(mix(hash(i), hash(i + vec2(1.0, 0.0)), f.x), mix(hash(i + vec2(0.0, 1.0)), hash(i + vec2(1.0, 1.0)), f.x), f.y);
}

void main() {
    vec3 base = v_colour;
    int tex = int(v_info.y + 0.5);
    vec3 n = normalize(v_normal);
    if (tex == 1) {          // asphalt: fine grain + patches
        base *= 0.88 + 0.12 * vnoise(v_world.xy * 2.5) + 0.10 * vnoise(v_world.xy * 0.2);
    } else if (tex == 2) {   // building walls: windows on a 3 m x 3.3 m grid, darker near the ground
        vec2 cell = fract(v_uv / vec2(3.0, 3.3));
        float floor_id = floor(v_uv.y / 3.3);
        if (abs(n.z) < 0.5 && floor_id >= 1.0 && cell.x > 0.22 && cell.x < 0.78 && cell.y > 0.28 && cell.y < 0.78) {
            base = window_colour * (0.8 + 0.4 * hash(floor(v_uv / vec2(3.0, 3.3)) + 7.0));
        }
        base *= 0.8 + 0.2 * clamp(v_world.z / 3.0, 0.0, 1.0);
    } else if (tex == 3) {   // paving tiles
        vec2 g = fract(v_world.xy / 1.2);
        if (min(g.x, g.y) < 0.06) base *= 0.85;
        base *= 0.95 + 0.08 * hash(floor(v_world.xy / 1.2));
    } else if (tex == 4) {   // grass
        base *= 0.8 + 0.25 * vnoise(v_world.xy * 1.5) + 0.15 * vnoise(v_world.xy * 0.08);
    } else if (tex == 5) {   // foliage
        base *= 0.75 + 0.4 * hash(floor(v_world.xz * 3.0) + floor(v_world.y * 3.0));
    }
    float diffuse = max(dot(n, sun_dir), 0.0);
    vec3 colour = base * (ambient * (0.8 + 0.2 * n.z) + sun_colour * diffuse);
    float fog = 1.0 - exp(-fog_density * v_depth);
    colour = mix(colour, fog_colour, fog);
    out_colour = vec4(colour, 1.0);
    out_aux = vec2(v_depth, v_info.x);
}
"""

STATIC_VERT = """
#version 330
uniform mat4 view;
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_colour;
in vec2 in_uv;
in vec2 in_info;
out vec3 v_world;
out vec3 v_normal;
out vec3 v_colour;
out vec2 v_uv;
flat out vec2 v_info;
out float v_depth;
void main() {
    vec4 cam = view * vec4(in_pos, 1.0);
    gl_Position = proj * cam;
    v_world = in_pos;
    v_normal = in_normal;
    v_colour = in_colour;
    v_uv = in_uv;
    v_info = in_info;
    v_depth = cam.z;
}
"""

VEHICLE_VERT = """
#version 330
uniform mat4 view;
uniform mat4 proj;
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_colour;
in vec2 in_uv;
in vec2 in_info;       // label, tint (1 = paint colour)
in vec3 i_pose;        // x, y, yaw
in vec3 i_size;        // length, width, height
in vec3 i_colour;
out vec3 v_world;
out vec3 v_normal;
out vec3 v_colour;
out vec2 v_uv;
flat out vec2 v_info;
out float v_depth;
void main() {
    float c = cos(i_pose.z), s = sin(i_pose.z);
    vec3 p = in_pos * i_size;
    vec3 world = vec3(i_pose.x + c * p.x - s * p.y, i_pose.y + s * p.x + c * p.y, p.z);
    vec4 cam = view * vec4(world, 1.0);
    gl_Position = proj * cam;
    v_world = world;
    v_normal = vec3(c * in_normal.x - s * in_normal.y, s * in_normal.x + c * in_normal.y, in_normal.z);
    v_colour = mix(in_colour, i_colour, in_info.y);
    v_uv = in_uv;
    v_info = vec2(in_info.x, 0.0);
    v_depth = cam.z;
}
"""

SKY_VERT = """
#version 330
in vec2 in_ndc;
out vec2 v_ndc;
void main() {
    v_ndc = in_ndc;
    gl_Position = vec4(in_ndc, 0.9999, 1.0);
}
"""

SKY_FRAG = """
#version 330
uniform mat4 inv_proj_rot;   // NDC -> world ray direction (rotation only)
uniform vec3 zenith;
uniform vec3 horizon;
uniform vec3 sun_dir;
uniform vec3 sun_colour;
uniform float far;
in vec2 v_ndc;
layout(location = 0) out vec4 out_colour;
layout(location = 1) out vec2 out_aux;
void main() {
    vec3 d = normalize((inv_proj_rot * vec4(v_ndc, 1.0, 1.0)).xyz);
    float e = clamp(d.z, 0.0, 1.0);
    vec3 colour = mix(horizon, zenith, pow(e, 0.6));
    float glow = pow(max(dot(d, sun_dir), 0.0), 64.0);
    colour += sun_colour * glow * 0.5;
    out_colour = vec4(colour, 1.0);
    out_aux = vec2(far, 0.0);
}
"""
