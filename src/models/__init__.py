"""The networks and the GAN: upsampling blocks (the one place variants differ), the
generator and discriminator builders, and the GAN's training step."""
