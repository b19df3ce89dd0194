"""upsampler-gan: does it matter how a GAN generator upsamples?"""
