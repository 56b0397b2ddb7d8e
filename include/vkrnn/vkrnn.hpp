#pragma once
// The whole public API.
#include "vkrnn/context.hpp"
#include "vkrnn/device.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/kernel.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/half.hpp"
